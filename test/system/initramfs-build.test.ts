/**
 * `cairn initramfs build` from this machine's busybox and Debian's cloud
 * kernel modules (fetched into the test cache, see test/helpers/vm-kernel.ts):
 * the archive is read back with cpio, unpacked, and its programs run in a
 * chroot of it, so every library they need is really there.
 */
import { execa } from 'execa';
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, Scratch } from '../helpers/system.js';
import { requireHostTools } from '../helpers/vm-fixtures.js';
import { debianCloudKernel, type TestKernel } from '../helpers/vm-kernel.js';

let scratch: Scratch;
let kernel: TestKernel;
let tree: string;
let archive: string;

const REPO_INIT = join(process.cwd(), 'initramfs');

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('these tests need root (device nodes from cpio -i, chroot): run them as root');
  requireHostTools('these tests', ['busybox', 'mksquashfs', 'unsquashfs', 'cryptsetup', 'cpio', 'chroot', 'apt-get', 'apt-cache', 'dpkg-deb', 'depmod']);
  scratch = new Scratch();
  kernel = await debianCloudKernel();
  archive = scratch.path('initramfs.gz');
  const r = await cairn(['initramfs', 'build', '--kver', kernel.version, '--modules-dir', kernel.root, '--output', archive, '--luks', '--busybox', '/usr/bin/busybox']);
  expect(r.exitCode, r.stderr).toBe(0);
  tree = scratch.path('tree');
  await mkdir(tree);
  await execa('sh', ['-c', `zcat '${archive}' | cpio -i -d -m --quiet`], { cwd: tree });
}, 600_000);

afterAll(async () => {
  await scratch?.cleanup();
});

const modules = () => join(tree, 'lib/modules', kernel.version);

describe('cairn initramfs build', () => {
  it('is a gzipped newc cpio that cpio lists, starting with the directories and ending with its trailer', async () => {
    const head = readFileSync(archive).subarray(0, 3);
    expect([...head]).toEqual([0x1f, 0x8b, 0x08]);
    const list = await execa('sh', ['-c', `zcat '${archive}' | cpio -t --quiet`]);
    const names = list.stdout.split('\n');
    expect(names).toEqual([...names].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
    expect(names).toEqual(expect.arrayContaining(['init', 'bin/busybox', 'sbin/modprobe', 'sbin/switch_root', 'dev/console', 'dev/null']));
  });

  it('holds /init and the early-boot library as in the repository', () => {
    expect(readFileSync(join(tree, 'init'))).toEqual(readFileSync(join(REPO_INIT, 'init')));
    expect(statSync(join(tree, 'init')).mode & 0o777).toBe(0o755);
    const lib = readdirSync(join(REPO_INIT, 'lib')).filter((f) => f.endsWith('.sh')).sort();
    expect(readdirSync(join(tree, 'lib/cairn')).sort()).toEqual(lib);
    for (const f of lib) expect(readFileSync(join(tree, 'lib/cairn', f))).toEqual(readFileSync(join(REPO_INIT, 'lib', f)));
  });

  it('has /dev/console and /dev/null as device nodes', () => {
    const console = lstatSync(join(tree, 'dev/console'));
    expect(console.isCharacterDevice()).toBe(true);
    expect([Math.floor(console.rdev / 256), console.rdev % 256]).toEqual([5, 1]);
    const nul = lstatSync(join(tree, 'dev/null'));
    expect(nul.isCharacterDevice()).toBe(true);
    expect([Math.floor(nul.rdev / 256), nul.rdev % 256]).toEqual([1, 3]);
  });

  it('links every applet the early boot runs to busybox, modprobe where the kernel looks for it', () => {
    for (const applet of ['sbin/modprobe', 'sbin/switch_root', 'sbin/findfs', 'sbin/mke2fs', 'bin/cttyhack', 'usr/bin/setsid', 'bin/sh', 'usr/bin/awk', 'usr/bin/sha256sum', 'bin/stat', 'bin/sleep', 'bin/mount']) {
      expect(readlinkSync(join(tree, applet)), applet).toBe('/bin/busybox');
    }
  });

  it('runs busybox, unsquashfs, setfattr, e2fsck, cryptsetup and blkid in a chroot of itself: every library is there', async () => {
    const run = (args: string[]) => execa('chroot', [tree, ...args], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, reject: false });
    expect((await run(['/bin/busybox', 'true'])).exitCode).toBe(0);
    const version = await run(['unsquashfs', '-version']);
    expect(version.stdout, version.stderr).toMatch(/^unsquashfs version/); // it exits 1 after -version
    // A real unpack, with the compressor a save uses.
    await mkdir(scratch.path('sq/etc'), { recursive: true });
    await writeFile(scratch.path('sq/etc/hostname'), 'from squashfs\n');
    await execa('mksquashfs', [scratch.path('sq'), join(tree, 'tmp/t.squashfs'), '-comp', 'zstd', '-quiet', '-noappend']);
    const sq = await run(['unsquashfs', '-no-progress', '-d', '/tmp/out', '/tmp/t.squashfs']);
    expect(sq.exitCode, sq.stderr).toBe(0);
    expect(readFileSync(join(tree, 'tmp/out/etc/hostname'), 'utf8')).toBe('from squashfs\n');
    // A state's ACL record set again as the boot does (initramfs/lib/acl.sh).
    const deny = '0x0200000001000600ffffffff02000000e803000004000000ffffffff10000000ffffffff20000000ffffffff';
    await writeFile(join(tree, 'tmp/secret'), 'only mine\n', { mode: 0o600 });
    await writeFile(join(tree, 'tmp/acls'), `# file: secret\nsystem.posix_acl_access=${deny}\n\n`);
    const sf = await run(['sh', '-c', 'cd /tmp && setfattr -h --restore=acls']);
    expect(sf.exitCode, sf.stderr).toBe(0);
    const acl = await execa('getfattr', ['-e', 'hex', '-n', 'system.posix_acl_access', join(tree, 'tmp/secret')]);
    expect(acl.stdout).toContain(`system.posix_acl_access=${deny}`);
    const cs = await run(['cryptsetup', '--version']);
    expect(cs.exitCode, cs.stderr).toBe(0);
    expect(cs.stdout).toMatch(/^cryptsetup 2\./);
    // The data partition's check before the mount (initramfs/lib/data.sh), on an ext4 image.
    await execa('mkfs.ext4', ['-q', '-F', join(tree, 'tmp/fs.img'), '8M']);
    const fsck = await run(['e2fsck', '-p', '/tmp/fs.img']);
    expect(fsck.exitCode, fsck.stderr).toBe(0);
    expect(fsck.stdout).toMatch(/clean/);
    const bl = await run(['blkid', '--version']);
    expect(bl.exitCode, bl.stderr).toBe(0);
    expect(bl.stdout).toContain('util-linux');
    const sh = await run(['sh', '-c', 'echo $((6 * 7)) | sha256sum | cut -c1-8; stat -f -c %S /']);
    expect(sh.exitCode, sh.stderr).toBe(0);
  });

  it('carries the modules the boot needs with their dependencies, and a modules.dep that lists only what is there', () => {
    const dep = readFileSync(join(modules(), 'modules.dep'), 'utf8').trim().split('\n');
    const listed = new Set<string>();
    for (const line of dep) {
      const [mod, deps] = line.split(':');
      for (const p of [mod!, ...deps!.trim().split(/\s+/).filter(Boolean)]) listed.add(p);
    }
    for (const p of listed) expect(existsSync(join(modules(), p)), p).toBe(true);
    const names = [...listed].map((p) => p.replace(/^.*\//, '').replace(/\.ko$/, ''));
    // This kernel has these as modules (ext4 is built in).
    expect(names).toEqual(expect.arrayContaining([
      'squashfs', 'overlay', 'loop', 'zram', 'zsmalloc', 'dm-crypt', 'dm-mod', 'xts', 'virtio_blk', 'virtio_pci', 'virtio',
      'virtio_ring', 'virtio_scsi', 'sd_mod', 'scsi_mod', 'vfat', 'fat', 'nls_cp437', 'nls_utf8', 'zstd', 'lz4',
    ]));
    const carried = readdirSync(modules(), { recursive: true }).filter((f) => String(f).endsWith('.ko')).length;
    expect(carried).toBe(listed.size);
    const alias = readFileSync(join(modules(), 'modules.alias'), 'utf8');
    expect(alias).toMatch(/^alias crypto-xts xts$/m);
    expect(alias).toMatch(/^alias virtio:d00000002v\* virtio_blk$/m);
    expect(alias).not.toMatch(/ e1000$/m);
    expect(readFileSync(join(modules(), 'modules.builtin'), 'utf8')).toContain('kernel/fs/ext4/ext4.ko');
  });

  it('makes the same bytes from the same inputs', async () => {
    const again = scratch.path('again.gz');
    const r = await cairn(['initramfs', 'build', '--kver', kernel.version, '--modules-dir', kernel.root, '--output', again, '--luks', '--busybox', '/usr/bin/busybox']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(readFileSync(again).equals(readFileSync(archive))).toBe(true);
  });

  it('replaces the output whole and leaves no temp file beside it; leaves out cryptsetup without --luks', async () => {
    const dir = scratch.path('out');
    await mkdir(dir);
    const out = join(dir, 'initramfs');
    await writeFile(out, 'old');
    const r = await cairn(['initramfs', 'build', '--kver', kernel.version, '--modules-dir', kernel.root, '--output', out, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(readdirSync(dir)).toEqual(['initramfs']);
    const report = JSON.parse(r.stdout) as { modules: string[]; programs: { name: string }[]; builtinModules: string[] };
    expect(report.programs.map((p) => p.name)).not.toContain('cryptsetup');
    expect(report.modules).not.toContain('dm_crypt');
    expect(report.builtinModules).toContain('ext4');
    const list = await execa('sh', ['-c', `zcat '${out}' | cpio -t --quiet`]);
    expect(list.stdout).not.toContain('usr/sbin/cryptsetup');
  });
});

describe('cairn initramfs build fails with the reason', () => {
  it('names a missing kernel modules tree', async () => {
    const r = await cairn(['initramfs', 'build', '--kver', '0.0.0-none', '--modules-dir', kernel.root, '--output', scratch.path('x.gz')]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`cairn: no kernel modules for 0.0.0-none under ${kernel.root}`);
    expect(existsSync(scratch.path('x.gz'))).toBe(false);
  });

  it('names a required module the kernel lacks', async () => {
    const r = await cairn(['initramfs', 'build', '--kver', kernel.version, '--modules-dir', kernel.root, '--output', scratch.path('x.gz'), '--module', 'no_such_driver']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`cairn: kernel ${kernel.version} has no module no_such_driver, neither as a file nor built in`);
  });

  it('names a missing busybox', async () => {
    const r = await cairn(['initramfs', 'build', '--kver', kernel.version, '--modules-dir', kernel.root, '--output', scratch.path('x.gz'), '--busybox', '/nonexistent/busybox']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('cairn: /nonexistent/busybox was not found');
    expect(r.stderr).toContain('hint: install busybox (apt-get install busybox-static / apk add busybox), or give one with cairn initramfs build --busybox PATH');
  });
});
