/**
 * `truncate -s 1T ~/big.img`, as any user may: mksquashfs finds holes by
 * reading them, an hour for this file. A save keeps such a file without its
 * holes (src/save/sparse.ts) and the boot rebuilds it (initramfs/lib/
 * sparse.sh): a real `cairn save` within a minute, the boot's own unpack
 * under busybox on tmpfs and on zram, and the file compared with the one
 * saved by a description made here, independently of cairn: size, mode,
 * owner, times, links, xattrs, ACLs, where its data lies and what it holds.
 */
import { execa } from 'execa';
import { chmod, chown, mkdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STATE } from '../../src/names.js';
import { compareTrees } from '../../src/save/compare.js';
import { walkTree } from '../../src/save/tree.js';
import { busyboxSh } from '../helpers/initramfs-env.js';
import { cairn, catFromImage, requireSystem, Scratch } from '../helpers/system.js';
import { requireZramAndOverlay, Sandbox } from './initramfs/fixtures.js';

/** Runs a shell script as uid 1000, as any local user could. */
const asUser = (script: string, ...args: string[]) =>
  execa('setpriv', ['--reuid', '1000', '--regid', '1000', '--clear-groups', 'sh', '-c', script, 'sh', ...args]);

const TIB = 2 ** 40;
const ODD = "odd name\nwith 'quotes' $(x)";

/**
 * Per file below `$U/home/user` but vm.img (sorted, by name): size, mode, owner, mtime,
 * link count, inode group, blocks in use at most, the data extents found
 * with SEEK_DATA and the sha256 of what they hold; all xattrs (getfattr);
 * and the directory's own mtime. Perl's sysseek and Digest::SHA, not cairn.
 */
const DESCRIBE = `
cd "$U/home/user" || exit 1
perl -MDigest::SHA -e '
  my %group;
  # vm.img is squashed as it is: unsquashfs writes its first block whole,
  # zeros and all, so its data extents are not the ones saved.
  for my $f (grep { $_ ne "vm.img" } sort glob("{*,.[!.]*}")) {
    my @s = lstat $f; open(my $h, "<:raw", $f) or die "$f: $!";
    my ($pos, @x) = (0);
    my $sha = Digest::SHA->new(256);
    while ($pos < $s[7]) {
      my $d = sysseek($h, $pos, 3); last unless defined $d;
      my $e = sysseek($h, $d, 4);
      push @x, ($d + 0) . "+" . ($e - $d);
      sysseek($h, $d, 0); my $left = $e - $d;
      while ($left > 0) { my $n = sysread($h, my $buf, $left > 1048576 ? 1048576 : $left) or die; $sha->add($buf); $left -= $n; }
      $pos = $e;
    }
    $group{$s[1]} //= $f;
    printf "%s: size %d mode %o owner %d:%d mtime %d links %d with %s kb<=8200 %s data %s sha %s\\n",
      $f =~ s/\\n/\\\\n/gr, $s[7], $s[2] & 07777, $s[4], $s[5], $s[9], $s[3], $group{$s[1]} =~ s/\\n/\\\\n/gr,
      ($s[12] * 512 <= 8200 * 1024 ? "yes" : "no"), join(" ", @x), $sha->hexdigest;
  }
  printf "dir mtime %d\\n", (stat ".")[9];
'
getfattr -h -d -m - -e hex -- * | sed 's/^# file: //'
`;

const s = new Scratch();
let sb: Sandbox;
let upper: string;
let data: string;
let before: string;

beforeAll(async () => {
  requireSystem(['mksquashfs', 'unsquashfs', 'getfattr', 'setfattr', 'setfacl', 'perl', 'losetup', 'mkfs.ext4', 'busybox']);
  await requireZramAndOverlay();
  sb = await Sandbox.create('save-sparse');
  await chmod(s.dir, 0o711);
  upper = s.path('upper');
  const home = join(upper, 'home/user');
  await mkdir(home, { recursive: true });
  await chown(home, 1000, 1000);
  await asUser(
    `cd "$1" && truncate -s 1T big.img && echo head | dd of=big.img conv=notrunc status=none &&
     head -c 4M /dev/urandom | dd of=big.img bs=1M seek=300000 conv=notrunc status=none &&
     chmod 640 big.img && setfattr -n user.note -v kept big.img && setfacl -m u:1001:r-- big.img &&
     ln big.img big-link.img &&
     truncate -s $((1 << 40 | 123)) "$2" && printf 'the last bytes' | dd of="$2" bs=1 seek=$(((1 << 40) + 109)) conv=notrunc status=none &&
     truncate -s 1G vm.img && echo boot sector | dd of=vm.img conv=notrunc status=none &&
     echo notes > notes.txt && touch -d '2020-01-02 03:04:05' big.img && touch -d '2021-02-03 04:05:06' .`,
    home,
    ODD,
  );
  before = (await busyboxSh(DESCRIBE, { env: { U: upper }, namespace: false })).stdout;
  data = await s.dataPartition('data', 128);
});

afterAll(async () => {
  await s.cleanup();
  await sb?.cleanup();
});

describe('a 1 TiB sparse file in the home directory', () => {
  it('is what the issue describes (the test is not empty)', () => {
    expect(before).toMatch(/^big\.img: size 1099511627776 mode 640 owner 1000:1000 mtime 1577934245 links 2 with big-link\.img kb<=8200 yes data 0\+4096 314572800000\+4194304 /m);
    expect(before).toMatch(/^odd name\\nwith 'quotes' \$\(x\): size 1099511627899 .* data 1099511627776\+123 /m);
    expect(before).toContain('user.note=0x6b657074');
    expect(before).toContain('system.posix_acl_access=');
  });

  it('is saved within a minute, with nothing left out', async () => {
    const t0 = Date.now();
    const r = await cairn(['save', '--upper', upper, '--data', data, '--json']);
    const seconds = (Date.now() - t0) / 1000;
    console.log(`save with two 1 TiB sparse files (kept without their holes) and a 1 GiB one: ${seconds} s`);
    expect(r.exitCode, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.warnings.filter((w: string) => w.startsWith('not saved'))).toEqual([]);
    expect(r.stderr).not.toMatch(/not saved/);
    expect(seconds).toBeLessThan(60);
    // The data, not the holes: a few MiB of random bytes.
    expect(report.bytes).toBeLessThan(12 << 20);
    const image = join(data, 'upperfs.squashfs');
    expect(await catFromImage(image, 'home/user/notes.txt')).toBe('notes');
    // Only root reads the record.
    const listing = (await execa('unsquashfs', ['-lln', image])).stdout;
    expect(listing).toMatch(new RegExp(`^drwx------ 0/0 .* squashfs-root/${STATE.sparseDir}$`, 'm'));
    expect(listing).toMatch(/-rw-r--r-- 1000\/1000\s+1073741824 .*home\/user\/vm\.img/);
  });

  for (const kind of ['tmpfs', 'zram'] as const) {
    it(`comes back exactly after the boot unpacks the state on ${kind}, holes and all`, async () => {
      const root = await sb.root(`root-${kind}`);
      const r = await sb.lib(
        `
upper_create ${kind} ${128 << 20} || exit 12
why=$(state_unpack "$STATE" "$ROOT$CAIRN_UPPER_DIR") || { echo "unpack failed: $why" >&2; exit 13; }
[ ! -e "$ROOT$CAIRN_UPPER_DIR/$CAIRN_SPARSE_DIR" ] || { echo "the record is still there" >&2; exit 14; }
U=$ROOT$CAIRN_UPPER_DIR
${DESCRIBE}
`,
        { root, env: { STATE: join(data, 'upperfs.squashfs') } },
      );
      sb.resetZram();
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout).toBe(before);
    });
  }

  it('does not fit where its data does not, and says so', async () => {
    const root = await sb.root('root-small');
    const r = await sb.lib(
      `
upper_create tmpfs $((6 << 20)) || exit 12
why=$(state_unpack "$STATE" "$ROOT$CAIRN_UPPER_DIR"); echo "status $? $why"
`,
      { root, env: { STATE: join(data, 'upperfs.squashfs') } },
    );
    expect(r.stdout).toMatch(/^status 2 does not fit in the upper layer/m);
  });

  it('cairn verify of the state reads its data, not its holes', async () => {
    const t0 = Date.now();
    const v = await cairn(['verify', '--json', join(data, 'upperfs.squashfs')]);
    expect(v.exitCode, v.stderr).toBe(0);
    expect(JSON.parse(v.stdout).bytesRead).toBeLessThan(12 << 20);
    expect((Date.now() - t0) / 1000).toBeLessThan(20);
  });

  it('the verification finds a changed byte, and data written into a hole', async () => {
    const mnt = s.path('mnt');
    await mkdir(mnt);
    await execa('mount', ['-t', 'squashfs', '-o', 'loop,ro', join(data, 'upperfs.squashfs'), mnt]);
    try {
      const compare = () =>
        compareTrees({ upper: walkTree(upper, undefined, { forSave: true }), upperRoot: upper, imageRoot: mnt, since: Date.now() });
      expect((await compare()).differences.filter((d) => !d.path.startsWith('/tmp'))).toEqual([]);
      const fh = await open(join(upper, 'home/user/big.img'), 'r+');
      await fh.write(Buffer.from('X'), 0, 1, 300000 * 2 ** 20 + 12345);
      let found = (await compare()).differences;
      // Either of its two names: they are one file.
      expect(found).toEqual([
        expect.objectContaining({ path: expect.stringMatching(/^\/home\/user\/big(-link)?\.img$/), what: 'contents', actual: `different from byte ${300000 * 2 ** 20 + 12345} on` }),
      ]);
      await fh.write(Buffer.from('Y'), 0, 1, TIB / 2);
      await fh.close();
      found = (await compare()).differences;
      expect(found.map((d) => `${d.path} ${d.what}`).sort()).toEqual(['/home/user/big-link.img sparse file', '/home/user/big.img sparse file']);
      expect(found[0]!.expected).toContain('549755813888+4096');
    } finally {
      await execa('umount', [mnt]);
    }
  });
});
