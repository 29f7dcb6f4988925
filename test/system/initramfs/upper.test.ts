/**
 * The upper layer on zram and on tmpfs, the state unpacked into it with its
 * whiteouts and opaque dirs, the real overlay over the base system showing
 * what the state deleted as deleted, and the fallbacks (default -> backup ->
 * clean) when a state does not fit. Real loop devices, zram, squashfs and overlayfs.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { keyValues, requireRoot, requireTools } from '../../helpers/initramfs-env.js';
import { buildState, dataPartition, mksquashfs, requireZramAndOverlay, Sandbox, sealTree, writeLowerTree, writeStateTree } from './fixtures.js';
import { sealImage } from './seal.js';

let sb: Sandbox;
const img: Record<string, string> = {};
const MiB = 1 << 20;

beforeAll(async () => {
  requireRoot('loop devices, zram and mounts');
  requireTools(['busybox', 'unshare', 'losetup', 'mkfs.ext4', 'mksquashfs', 'unsquashfs', 'setfattr', 'getfattr', 'findfs']);
  await requireZramAndOverlay();
  sb = await Sandbox.create('upper');

  await writeLowerTree(sb.path('lower-tree'));
  img.rootfs = sb.path('rootfs.squashfs');
  await mksquashfs(sb.path('lower-tree'), img.rootfs);
  img.newest = sb.path('newest.squashfs');
  await buildState(sb, img.newest, 'newest');
  // 24 MiB of files: more than a 16 MiB upper layer holds, by their sizes alone.
  img.big = sb.path('big.squashfs');
  await buildState(sb, img.big, 'big', 24);
  // 6000 one-byte files: 6 kB by their sizes, but a page each on tmpfs (23 MiB).
  const many = sb.path('many-tree');
  await mkdir(join(many, 'many'), { recursive: true });
  for (let i = 0; i < 6000; i++) await writeFile(join(many, 'many', `f${i}`), 'x');
  img.many = sb.path('many.squashfs');
  await mksquashfs(many, img.many);
  await sealImage(img.many, { id: 'id-many' });
  // Sealed, so intact by its checksum, but not a squashfs image.
  // A 4 GiB disk image holding 1 MiB of data: 4 GiB by its size, 1 MiB by its blocks.
  const sparse = sb.path('sparse-tree');
  await writeStateTree(sparse, 'sparse');
  await writeFile(join(sparse, 'home/user/disk.img'), randomBytes(1 << 20));
  await truncate(join(sparse, 'home/user/disk.img'), 4 * 1024 * MiB);
  img.sparse = sb.path('sparse.squashfs');
  await sealTree(sparse, img.sparse, 'sparse');
  img.backup = sb.path('backup.squashfs');
  await buildState(sb, img.backup, 'backup');
  img.bigBackup = sb.path('big-backup.squashfs');
  await buildState(sb, img.bigBackup, 'big-backup', 20);
  img.garbage = sb.path('garbage.squashfs');
  await writeFile(img.garbage, randomBytes(64 * 1024));
  await sealImage(img.garbage, { id: 'id-garbage' });
});

afterEach(() => {
  sb?.resetZram();
});

afterAll(async () => {
  await sb?.cleanup();
});

let rootCount = 0;

/** What the overlay root and the upper layer look like after a boot up to the overlay mount. */
const INSPECT = `
echo "upper_used=$cairn_upper_used"
echo "used=$cairn_used"
echo "fallback=$cairn_fallback"
u=$ROOT$CAIRN_UPPER_DIR
m=$ROOT$CAIRN_NEWROOT
echo "upper_mount=$(awk -v d="$ROOT$CAIRN_UPPER_MOUNT" '$2 == d { print $1, $3 }' /proc/self/mounts)"
echo "whiteout=$(stat -c '%F %t:%T' "$u/etc/gone" 2>&1)"
echo "opaque=$(getfattr --only-values -n trusted.overlay.opaque "$u/etc/od" 2>/dev/null)"
echo "merged_etc=$(ls "$m/etc" | tr '\\n' ' ')"
echo "merged_od=$(ls "$m/etc/od" | tr '\\n' ' ')"
echo "merged_hostname=$(cat "$m/etc/hostname")"
echo "merged_notes=$(cat "$m/home/user/notes" 2>&1)"
# The overlay is writable and records a deletion the way the saved state does.
rm "$m/etc/kept" && echo written > "$m/etc/written"
echo "new_whiteout=$(stat -c '%F %t:%T' "$u/etc/kept" 2>&1)"
echo "written=$(cat "$u/etc/written")"
`;

/** Boots FILES up to the overlay, with the upper layer on KIND of BYTES; runs AFTER. */
async function bootToOverlay(files: Record<string, string>, kind: string, bytes: number, after: string) {
  const part = await dataPartition(sb, { 'rootfs.squashfs': img.rootfs!, ...files });
  const r = await sb.lib(
    `
data_find "LABEL=${part.label}" || exit 10
data_mount "$cairn_data_dev" || exit 11
root_mount_lower || exit 12
upper_create ${kind} ${bytes} || exit 13
state_select default
state_fill || exit 14
root_mount_overlay || exit 15
${after}
`,
    { root: await sb.root(`root-${rootCount++}`), binds: ['dev', 'sys'] },
  );
  expect(r.exitCode, r.stderr).toBe(0);
  const out: Record<string, string> = { ...keyValues(r.stdout), console: r.stderr };
  return out;
}

describe('upper layer', () => {
  it('mounts a tmpfs of the size asked for, with the upperdir and workdir in it', async () => {
    const root = await sb.root(`root-${rootCount++}`);
    const r = await sb.lib(
      `upper_create tmpfs ${64 * MiB} || exit 1
echo "used=$cairn_upper_used"
awk -v d="$ROOT$CAIRN_UPPER_MOUNT" '$2 == d { print "mount=" $1 " " $3 " " $4 }' /proc/self/mounts
ls -d "$ROOT$CAIRN_UPPER_DIR" "$ROOT$CAIRN_WORK_DIR" >/dev/null && echo dirs=yes`,
      { root, binds: [] },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    const v = keyValues(r.stdout);
    expect(v.used).toBe('tmpfs');
    expect(v.mount).toMatch(/^cairn-upper tmpfs rw,.*size=65536k/);
    expect(v.dirs).toBe('yes');
    expect(r.stderr).toContain('upper layer: tmpfs, 64 MiB');
  });

  it('sets up zram, compressed, with ext4 on it', async () => {
    const root = await sb.root(`root-${rootCount++}`);
    const r = await sb.lib(
      `upper_create zram ${64 * MiB} || exit 1
echo "used=$cairn_upper_used"
dev=$(awk -v d="$ROOT$CAIRN_UPPER_MOUNT" '$2 == d { print $1 }' /proc/self/mounts)
echo "mount=$(awk -v d="$ROOT$CAIRN_UPPER_MOUNT" '$2 == d { print $3, $4 }' /proc/self/mounts)"
n=\${dev##*/}
echo "dev=$n"
echo "disksize=$(cat /sys/block/$n/disksize)"
echo "algorithm=$(cat /sys/block/$n/comp_algorithm)"
echo "label=$(blkid -o value -s LABEL "$dev")"
ls -d "$ROOT$CAIRN_UPPER_DIR" "$ROOT$CAIRN_WORK_DIR" >/dev/null && echo dirs=yes
# A 60,000-byte xattr, as a session on tmpfs may have saved one.
: >"$ROOT$CAIRN_UPPER_DIR/big-xattr"
setfattr -n user.big -v "0x$(head -c 60000 /dev/zero | od -An -v -tx1 | tr -d ' \\n')" "$ROOT$CAIRN_UPPER_DIR/big-xattr" && echo big_xattr=yes`,
      { root, binds: ['dev', 'sys'] },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    const v = keyValues(r.stdout);
    expect(v.big_xattr, r.stderr).toBe('yes');
    expect(v.used).toBe('zram');
    expect(v.dev).toMatch(/^zram[0-9]+$/);
    expect(v.mount).toMatch(/^ext4 rw,.*discard/);
    expect(v.disksize).toBe(String(64 * MiB));
    expect(v.label).toBe('cairn-upper');
    // The first compressor of CAIRN_ZRAM_ALGOS that the kernel offers.
    const offered = v.algorithm!.replace(/[[\]]/g, '').split(/\s+/);
    const best = ['zstd', 'lz4', 'lzo-rle', 'lzo'].find((a) => offered.includes(a));
    expect(v.algorithm).toContain(`[${best}]`);
    expect(v.dirs).toBe('yes');
  });

  it('says so, gives the zram device back and uses tmpfs when mkfs.ext4 is missing', async () => {
    const root = await sb.root(`root-${rootCount++}`);
    const r = await sb.lib(
      `command -v mkfs.ext4 && exit 1
upper_create zram ${64 * MiB} || exit 2
echo "used=$cairn_upper_used"
echo "mount=$(awk -v d="$ROOT$CAIRN_UPPER_MOUNT" '$2 == d { print $3 }' /proc/self/mounts)"`,
      // Without /usr/sbin and /sbin, mkfs.ext4 (e2fsprogs) is not found.
      { root, binds: ['dev', 'sys'], env: { PATH: '/usr/bin:/bin' } },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    expect(keyValues(r.stdout)).toEqual({ used: 'tmpfs', mount: 'tmpfs' });
    const zram = /warning: cannot set up (zram[0-9]+) as the upper layer/.exec(r.stderr)?.[1];
    expect(zram, r.stderr).toBeDefined();
    expect(r.stderr).toContain('warning: zram is not available; the upper layer is on tmpfs instead');
    // The device was reset: its memory is given back.
    expect(readFileSync(`/sys/block/${zram}/disksize`, 'utf8').trim()).toBe('0');
  });

  it('says so and uses tmpfs when zram is not available', async () => {
    // An empty $ROOT/sys: no zram-control, no zram0, and modprobe is a stand-in.
    const root = await sb.root(`root-${rootCount++}`);
    const r = await sb.lib(`upper_create zram ${32 * MiB} || exit 1\necho "used=$cairn_upper_used"`, { root, binds: [] });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(keyValues(r.stdout).used).toBe('tmpfs');
    expect(r.stderr).toContain('warning: zram is not available; the upper layer is on tmpfs instead');
    expect(await readFile(join(root, 'kmsg'), 'utf8')).toContain('<4>cairn: warning: zram is not available');
  });
});

describe.each(['zram', 'tmpfs'])('the state unpacked on %s under a real overlay', (kind) => {
  it('keeps whiteouts and opaque dirs, so that the merged root hides what the state deleted', async () => {
    const v = await bootToOverlay({ 'upperfs.squashfs': img.newest! }, kind, 64 * MiB, INSPECT);
    expect(v.upper_used).toBe(kind);
    expect(v.used).toBe('default');
    expect(v.upper_mount).toMatch(kind === 'zram' ? /zram[0-9]+ ext4$/ : /^cairn-upper tmpfs$/);
    // In the upper layer: the whiteout and the opaque mark, as saved.
    expect(v.whiteout).toBe('character special file 0:0');
    expect(v.opaque).toBe('y');
    // In the merged root: the deleted file is gone, the lower contents of the
    // opaque dir are hidden, the state's files win over the base system's.
    expect(v.merged_etc).toBe('hostname kept od ');
    expect(v.merged_od).toBe('new ');
    expect(v.merged_hostname).toBe('newest');
    expect(v.merged_notes).toBe('notes of newest');
    expect(v.new_whiteout).toBe('character special file 0:0');
    expect(v.written).toBe('written');
  });
});

describe('a state that does not fit', () => {
  /** Boots FILE into a 16 MiB tmpfs: the outcome, the upper layer, the merged root. */
  async function tooSmall(file: string, more = '', others: Record<string, string> = {}) {
    return bootToOverlay(
      { 'upperfs.squashfs': file, ...others },
      'tmpfs',
      16 * MiB,
      `${more}
echo "used=$cairn_used"
echo "fallback=$cairn_fallback"
echo "skipped=$cairn_skipped"
echo "upper_entries=$(ls -A "$ROOT$CAIRN_UPPER_DIR" | wc -l)"
echo "work_exists=$(test -d "$ROOT$CAIRN_WORK_DIR" && echo yes)"
echo "merged_hostname=$(cat "$ROOT$CAIRN_NEWROOT/etc/hostname")"`,
    );
  }

  it('falls back to clean, saying so, when its files are larger than the upper layer', async () => {
    const v = await tooSmall(img.big!);
    expect(v.used).toBe('clean');
    expect(v.fallback).toMatch(
      /^upperfs.squashfs does not fit in the upper layer \(needs 24 MiB, 1[0-9] MiB free; see cairn.upper_size\); upperfs-backup.squashfs is missing$/,
    );
    expect(v.console).toContain('booting the backup (upperfs-backup.squashfs) instead');
    expect(v.upper_entries).toBe('0');
    expect(v.work_exists).toBe('yes');
    expect(v.merged_hostname).toBe('lower');
    expect(v.console).not.toContain('unpacking');
    expect(v.skipped).toBe('id-big');
  });

  it('fits a state by the blocks its files take: a 4 GiB sparse file with 1 MiB of data boots in 16 MiB', async () => {
    const v = await tooSmall(img.sparse!, `echo "disk=$(stat -c '%s %b %B' "$ROOT$CAIRN_UPPER_DIR/home/user/disk.img")"`);
    expect(v.used).toBe('default');
    expect(v.fallback).toBe('');
    expect(v.merged_hostname).toBe('sparse');
    const [size, blocks, unit] = v.disk!.split(' ').map(Number);
    expect(size).toBe(4 * 1024 * MiB);
    expect(blocks! * unit!).toBeLessThan(2 * MiB);
  });

  it('falls back to the backup, not to clean, when the newest state does not fit', async () => {
    const v = await tooSmall(img.big!, '', { 'upperfs-backup.squashfs': img.backup! });
    expect(v.used).toBe('backup');
    expect(v.merged_hostname).toBe('backup');
    expect(v.fallback).toMatch(/^upperfs.squashfs does not fit in the upper layer \(needs 24 MiB/);
    expect(v.console).toContain('booting the backup (upperfs-backup.squashfs) instead');
    expect(v.skipped).toBe('id-big');
  });

  it('falls back to the backup when the newest state runs out of space while unpacking, and records both states when neither fits', async () => {
    const one = await tooSmall(img.many!, '', { 'upperfs-backup.squashfs': img.backup! });
    expect(one).toMatchObject({ used: 'backup', merged_hostname: 'backup', skipped: 'id-many' });
    const both = await tooSmall(img.big!, '', { 'upperfs-backup.squashfs': img.bigBackup! });
    expect(both).toMatchObject({ used: 'clean', merged_hostname: 'lower', upper_entries: '0', skipped: 'id-big id-big-backup' });
    expect(both.fallback).toMatch(/^upperfs.squashfs does not fit .*; upperfs-backup.squashfs does not fit /);
  });

  it('falls back to clean and empties the upper layer when it fills up while unpacking', async () => {
    const v = await tooSmall(img.many!);
    expect(v.used).toBe('clean');
    expect(v.fallback).toMatch(/^upperfs.squashfs does not fit in the upper layer \(it ran out of space/);
    expect(v.console).toContain('unpacking upperfs.squashfs');
    expect(v.upper_entries).toBe('0');
    expect(v.merged_hostname).toBe('lower');
  });

  it('changes nothing on the data partition', async () => {
    const part = await dataPartition(sb, { 'rootfs.squashfs': img.rootfs!, 'upperfs.squashfs': img.big! });
    const listing = `sha256sum "$ROOT$CAIRN_DATA_DIR"/* | sed "s|$ROOT||"; ls -lA --full-time "$ROOT$CAIRN_DATA_DIR" | sed "s|$ROOT||"`;
    const r = await sb.lib(
      `
data_find "LABEL=${part.label}" && data_mount "$cairn_data_dev" || exit 10
before=$(${listing})
upper_create tmpfs ${16 * MiB} && state_select default && state_fill || exit 11
after=$(${listing})
echo "used=$cairn_used"
[ "$before" = "$after" ] && echo same=yes
`,
      { root: await sb.root(`root-${rootCount++}`) },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    expect(keyValues(r.stdout)).toMatchObject({ used: 'clean', same: 'yes' });
  });

  it('falls back to clean when an intact state does not unpack', async () => {
    const v = await tooSmall(img.garbage!);
    expect(v.used).toBe('clean');
    expect(v.fallback).toMatch(/^upperfs.squashfs could not be unpacked: .+/);
    expect(v.upper_entries).toBe('0');
  });
});
