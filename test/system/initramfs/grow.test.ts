/**
 * The data partition grows to fill the stick (initramfs/lib/grow.sh), on
 * stick images laid out as `cairn image build` lays them out
 * (src/image/layout.ts) and then made larger, as a larger stick is.
 *
 * The kernel of the test machines reads no partition tables on loop
 * devices, so the table's steps run on the image file itself as the disk
 * ("$ROOT/dev/sdz", a plain file sfdisk writes as it writes a stick), with
 * a stand-in sysfs giving the partition's place as the kernel would. The
 * kernel's reading of the grown table is seen only in the VM test
 * (test/vm/grow.test.ts). The file system's step runs on a real loop
 * device with a real mounted ext4, grown online by resize2fs.
 */
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, open, readFile, symlink, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planLayout, sfdiskScript, TYPE_GUIDS, type Layout } from '../../../src/image/layout.js';
import { keyValues, requireAlpinePackages, requireRoot, requireTools } from '../../helpers/initramfs-env.js';
import { alpineRoot, Sandbox, testInitramfs } from './fixtures.js';

const MiB = 1 << 20;
const BUILT_MIB = 32;
const STICK_MIB = 128;
let sb: Sandbox;
let count = 0;

beforeAll(async () => {
  requireRoot('loop devices and mounts');
  requireTools(['busybox', 'unshare', 'losetup', 'sfdisk', 'resize2fs', 'mkfs.ext4', 'dumpe2fs']);
  sb = await Sandbox.create('grow');
});

afterAll(async () => {
  await sb?.cleanup();
});

interface Stick {
  root: string;
  disk: string;
  layout: Layout;
}

/**
 * An image of BUILT_MIB with cairn's table, on a stick of STICK_MIB: the
 * disk file at $ROOT/dev/sdz, and a sysfs saying where its partitions are.
 * TABLE overrides the table's script.
 */
async function stick(o: { stickMiB?: number; cmdline?: string; table?: (l: Layout) => string; partitions?: (l: Layout) => Array<{ n: number; start: number; size: number }> } = {}): Promise<Stick> {
  const root = await sb.root(`root-${count++}`, { cmdline: o.cmdline });
  const layout = planLayout(BUILT_MIB * MiB, 8);
  const disk = join(root, 'dev/sdz');
  await writeFile(disk, '');
  await truncate(disk, BUILT_MIB * MiB);
  await execa('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', disk], { input: (o.table ?? sfdiskScript)(layout) });
  // GRUB's boot code shares the first sector with the protective MBR.
  const fh = await open(disk, 'r+');
  await fh.write(Buffer.alloc(440, 0xeb), 0, 440, 0);
  await fh.close();
  await truncate(disk, (o.stickMiB ?? STICK_MIB) * MiB);
  const diskSys = join(root, 'sys/devices/virtual/block/sdz');
  await mkdir(join(root, 'sys/class/block'), { recursive: true });
  await mkdir(diskSys, { recursive: true });
  await writeFile(join(diskSys, 'size'), `${((o.stickMiB ?? STICK_MIB) * MiB) / 512}\n`);
  await symlink('../../devices/virtual/block/sdz', join(root, 'sys/class/block/sdz'));
  const parts = o.partitions?.(layout) ?? [layout.esp, layout.data, layout.bios].map((p) => ({ n: p.number, start: p.startSector, size: p.sectors }));
  for (const p of parts) {
    const dir = join(diskSys, `sdz${p.n}`);
    await mkdir(dir);
    await writeFile(join(dir, 'partition'), `${p.n}\n`);
    await writeFile(join(dir, 'start'), `${p.start}\n`);
    await writeFile(join(dir, 'size'), `${p.size}\n`);
    await symlink(`../../devices/virtual/block/sdz/sdz${p.n}`, join(root, `sys/class/block/sdz${p.n}`));
  }
  return { root, disk, layout };
}

/** sfdisk's view of DISK: the header's lines and each partition's start and size by number. */
async function table(disk: string): Promise<{ label: string; lastLba?: number; parts: Record<string, { start: number; size: number }> }> {
  const { stdout } = await execa('sfdisk', ['--dump', disk], { env: { LC_ALL: 'C' } });
  const parts: Record<string, { start: number; size: number }> = {};
  for (const m of stdout.matchAll(/^\S+?(\d+) : start=\s*(\d+), size=\s*(\d+)/gm)) parts[m[1]!] = { start: Number(m[2]), size: Number(m[3]) };
  const last = /^last-lba: (\d+)/m.exec(stdout);
  return { label: /^label: (\w+)/m.exec(stdout)![1]!, lastLba: last ? Number(last[1]) : undefined, parts };
}

async function growTable(s: Stick, initramfs?: string): Promise<{ out: Record<string, string>; stderr: string }> {
  // The stand-in sysfs never shows the grown partition: one second of waiting for it is enough.
  const r = await sb.lib(`cmdline_parse\ndata_grow_table /dev/sdz2\necho "said=$cairn_grow_said"\n`, { root: s.root, binds: [], env: { CAIRN_GROW_WAIT: '1' }, initramfs });
  expect(r.exitCode, r.stderr).toBe(0);
  return { out: keyValues(r.stdout), stderr: r.stderr };
}

const sha = async (f: string) => createHash('sha256').update(await readFile(f)).digest('hex');

describe('data_grow_table: the partition table', () => {
  it('moves the GPT backup copy to the end of a larger stick and grows the data partition to it; the other partitions and the boot code stay', async () => {
    const s = await stick();
    const before = await table(s.disk);
    expect(before.lastLba).toBeLessThan((STICK_MIB * MiB) / 512 - 34);
    const { out, stderr } = await growTable(s);
    const after = await table(s.disk);
    const last = (STICK_MIB * MiB) / 512 - 34;
    expect(after.lastLba).toBe(last);
    expect(after.parts['2']).toEqual({ start: s.layout.data.startSector, size: last - s.layout.data.startSector + 1 });
    expect(after.parts['1']).toEqual(before.parts['1']);
    expect(after.parts['3']).toEqual(before.parts['3']);
    const head = await readFile(s.disk);
    expect(head.subarray(0, 440).every((b) => b === 0xeb)).toBe(true);
    expect(stderr).toContain("moved the partition table's backup copy to the end of /dev/sdz");
    expect(stderr).toContain(`growing the data partition /dev/sdz2 to the end of /dev/sdz (${Math.floor(s.layout.data.sectors / 2048)} MiB now)`);
    // The stand-in sysfs never changes, as a kernel that cannot read the table again would not.
    expect(out.said).toBe('partition grown on /dev/sdz; the kernel uses it from the next boot');
    // The table sfdisk reads back is whole: both copies agree (sfdisk --verify).
    await execa('sfdisk', ['--verify', s.disk], { env: { LC_ALL: 'C' } });
  });

  it("does the same with Alpine's real sfdisk (musl), in the initramfs cairn builds from Alpine's packages", async () => {
    requireAlpinePackages();
    const { tree, report } = await testInitramfs(sb.path('alpine'), await alpineRoot(sb.path('alpine-root')));
    expect(report.programs.find((p) => p.name === 'sfdisk')?.libraries).toEqual(expect.arrayContaining(['/lib/ld-musl-x86_64.so.1']));
    const s = await stick();
    const before = await table(s.disk);
    const { stderr } = await growTable(s, tree);
    const after = await table(s.disk);
    expect(stderr).toContain("moved the partition table's backup copy to the end of /dev/sdz");
    expect(after.lastLba).toBe((STICK_MIB * MiB) / 512 - 34);
    expect(after.parts['2']).toEqual({ start: s.layout.data.startSector, size: after.lastLba! - s.layout.data.startSector + 1 });
    expect(after.parts['1']).toEqual(before.parts['1']);
    await execa('sfdisk', ['--verify', s.disk], { env: { LC_ALL: 'C' } });
  });

  it('after a power cut that came after the backup copy moved, the next boot only grows the partition', async () => {
    const s = await stick();
    await execa('sfdisk', ['--relocate', 'gpt-bak-std', s.disk], { env: { LC_ALL: 'C' } });
    const { stderr } = await growTable(s);
    expect(stderr).not.toContain('moved the partition table');
    expect(stderr).toContain('growing the data partition /dev/sdz2');
    expect((await table(s.disk)).parts['2']!.size).toBe((STICK_MIB * MiB) / 512 - 34 - s.layout.data.startSector + 1);
  });

  it('grows the last partition of an MBR (dos) table, which has no backup copy', async () => {
    const s = await stick({
      table: (l) => ['label: dos', `start=${l.esp.startSector}, size=${l.esp.sectors}, type=c`, `start=${l.data.startSector}, size=${l.data.sectors}, type=83`, ''].join('\n'),
      partitions: (l) => [{ n: 1, start: l.esp.startSector, size: l.esp.sectors }, { n: 2, start: l.data.startSector, size: l.data.sectors }],
    });
    const { stderr } = await growTable(s);
    expect(stderr).not.toContain('moved');
    const after = await table(s.disk);
    expect(after.label).toBe('dos');
    expect(after.parts['2']!.start).toBe(s.layout.data.startSector);
    expect(after.parts['2']!.size).toBeGreaterThan(((STICK_MIB - BUILT_MIB) * MiB) / 512);
  });

  it.each([
    ['cairn.grow=0 is given', { cmdline: 'cairn.grow=0' }, 'off (cairn.grow=0)'],
    ['the stick is the size of the image', { stickMiB: BUILT_MIB }, ''],
    ['the stick is less than 32 MiB larger', { stickMiB: BUILT_MIB + 16 }, ''],
  ])('leaves the stick untouched when %s', async (_why, o: { cmdline?: string; stickMiB?: number }, said) => {
    const s = await stick(o);
    const before = await sha(s.disk);
    const { out, stderr } = await growTable(s);
    expect(out.said).toBe(said);
    expect(stderr).not.toContain('growing');
    expect(await sha(s.disk)).toBe(before);
  });

  it('leaves the stick untouched when a partition lies after the data partition', async () => {
    const other = (l: Layout) => ({ n: 4, start: l.data.startSector + l.data.sectors - 2048, size: 1024 });
    const s = await stick({
      table: (l) =>
        ['label: gpt', 'unit: sectors', 'first-lba: 2048',
          `start=${l.esp.startSector}, size=${l.esp.sectors}, type=${TYPE_GUIDS.esp}`,
          `start=${l.data.startSector}, size=${l.data.sectors - 4096}, type=${TYPE_GUIDS.linux}`,
          `start=${l.bios.startSector}, size=${l.bios.sectors}, type=${TYPE_GUIDS.bios}`,
          `start=${other(l).start}, size=${other(l).size}, type=${TYPE_GUIDS.linux}`, ''].join('\n'),
      partitions: (l) => [
        { n: 1, start: l.esp.startSector, size: l.esp.sectors },
        { n: 2, start: l.data.startSector, size: l.data.sectors - 4096 },
        { n: 3, start: l.bios.startSector, size: l.bios.sectors },
        other(l),
      ],
    });
    const before = await sha(s.disk);
    const r = await sb.lib('cairn_debug=1\ndata_grow_table /dev/sdz2\necho "said=$cairn_grow_said"\n', { root: s.root, binds: [] });
    expect(r.stderr).toContain('not grown: sdz4 lies after it on /dev/sdz');
    expect(keyValues(r.stdout).said).toBe('');
    expect(await sha(s.disk)).toBe(before);
  });

  it('a cairn.grow= that is not 0 or 1 is named and the growth stays on', async () => {
    const root = await sb.root(`root-${count++}`, { cmdline: 'cairn.grow=no' });
    const r = await sb.lib('cmdline_parse\necho "grow=$cairn_grow"\n', { root, binds: [] });
    expect(keyValues(r.stdout).grow).toBe('1');
    expect(r.stderr).toContain('cairn.grow=no is not 0 or 1; using 1');
  });
});

describe('data_grow_fs: the file system, online', () => {
  // Growing a mounted ext4 takes CAP_SYS_RESOURCE, which the containers the
  // tests run in may lack (ext4's resize ioctl then fails with EPERM). With
  // it, the growth itself is checked; without it, that the refusal is
  // reported and nothing is harmed. The VM test grows a real stick either way.
  const canResize = (BigInt(`0x${/^CapEff:\s*([0-9a-f]+)/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]}`) >> 24n) & 1n;

  it(`grows the mounted ext4 to fill its grown device and keeps its files (${canResize ? 'this machine may' : 'this machine may not: the refusal is reported'})`, async () => {
    const image = sb.path(`fs-${count++}.img`);
    await writeFile(image, '');
    await truncate(image, 200 * MiB);
    await execa('mkfs.ext4', ['-q', '-F', '-L', 'grow-test', image, '64M']);
    await execa('debugfs', ['-w', '-R', 'write /etc/hostname kept', image]);
    const dev = await sb.attach(image);
    const root = await sb.root(`root-${count++}`);
    const script = [
      `data_mount ${dev} || exit 2`,
      `echo "before=$(ext4_bytes "$ROOT"${dev})"`,
      `data_grow_fs ${dev}`,
      'echo "said=$cairn_grow_said"',
      `echo "after=$(ext4_bytes "$ROOT"${dev})"`,
      'echo "kept=$(cat "$ROOT$CAIRN_DATA_DIR/kept")"',
      'cairn_grow_said=',
      `data_grow_fs ${dev}`,
      'echo "again=$cairn_grow_said"',
    ].join('\n');
    const r = await sb.lib(script, { root });
    expect(r.exitCode, r.stderr).toBe(0);
    const out = keyValues(r.stdout);
    expect(Number(out.before), r.stderr).toBe(64 * MiB);
    expect(r.stderr).toContain(`growing the file system on ${dev} from 64 MiB to 200 MiB`);
    expect(out.kept).toBe((await readFile('/etc/hostname', 'utf8')).trimEnd());
    if (canResize) {
      expect(Number(out.after), r.stderr).toBe(200 * MiB);
      expect(out.said).toBe('file system grown from 64 MiB to 200 MiB');
      expect(out.again).toBe('');
    } else {
      expect(Number(out.after)).toBe(64 * MiB);
      expect(out.said).toMatch(/^file system not grown \(resize2fs: .*Permission denied/);
      expect(r.stderr).toContain("warning: the data partition's file system not grown");
    }
    const fsck = await execa('e2fsck', ['-fn', image], { reject: false });
    expect(fsck.exitCode, fsck.stdout).toBe(0);
  });

  it('never writes to a data partition the check left read-only, nor with cairn.grow=0', async () => {
    const image = sb.path(`fs-${count++}.img`);
    await writeFile(image, '');
    await truncate(image, 200 * MiB);
    await execa('mkfs.ext4', ['-q', '-F', image, '64M']);
    const dev = await sb.attach(image);
    for (const setting of ['cairn_grow=1; cairn_data_ro=1', 'cairn_grow=0']) {
      const root = await sb.root(`root-${count++}`);
      const r = await sb.lib(`${setting}\ndata_mount ${dev} || exit 2\ndata_grow_fs ${dev}\necho "after=$(ext4_bytes "$ROOT"${dev})"\numount "$ROOT$CAIRN_DATA_DIR"\n`, { root });
      expect(r.exitCode, r.stderr).toBe(0);
      expect(Number(keyValues(r.stdout).after)).toBe(64 * MiB);
    }
  });

  it('reads the size of a 64-bit ext4 with 1 KiB blocks and of a 32-bit one from the superblock, and nothing from a non-ext4', async () => {
    const a = sb.path(`sb-a-${count++}.img`);
    const b = sb.path(`sb-b-${count++}.img`);
    for (const f of [a, b]) {
      await writeFile(f, '');
      await truncate(f, 100 * MiB);
    }
    await execa('mkfs.ext4', ['-q', '-F', '-O', '64bit', '-b', '1024', a, '50M']);
    await execa('mkfs.ext4', ['-q', '-F', '-O', '^64bit', b, '80M']);
    const r = await sb.lib(`echo "a=$(ext4_bytes ${a})"\necho "b=$(ext4_bytes ${b})"\necho "none=$(ext4_bytes /etc/hostname)"\n`, { root: await sb.root(`root-${count++}`) });
    expect(keyValues(r.stdout)).toEqual({ a: String(50 * MiB), b: String(80 * MiB), none: '' });
  });
});
