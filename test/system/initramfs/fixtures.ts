/**
 * Fixtures for the initramfs system tests: a fake root for "$ROOT", the
 * library sourced as init sources it, real data partitions on loop devices,
 * base systems and sealed states built with mksquashfs. Everything lives in
 * one scratch directory per test file, and cleanup() undoes it all.
 */
import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, open, readFile, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildInitramfs, type InitramfsReport } from '../../../src/initramfs/build.js';
import { REQUIRED_MODULES } from '../../../src/initramfs/bootModules.js';
import { busyboxSh, unpackAlpinePackages, type ShResult } from '../../helpers/initramfs-env.js';
import { sealImage, type SealFields } from './seal.js';

export const LIB = fileURLToPath(new URL('../../../initramfs/lib', import.meta.url));
export const INIT = fileURLToPath(new URL('../../../initramfs/init', import.meta.url));

/** The kernel release the tests pretend to run (modules-<it>.squashfs). */
export const KVER = '9.9.9-cairn-test';

/** The library, sourced as init sources it: names and tunables, then the functions; from AT (an initramfs's /lib/cairn). */
export function prelude(at = LIB): string {
  const first = ['names.sh', 'config.sh'];
  const rest = readdirSync(LIB)
    .filter((f) => f.endsWith('.sh') && !first.includes(f))
    .sort();
  return [...first, ...rest].map((f) => `. '${join(at, f)}' || exit 99\n`).join('');
}

/** Tunables every test sets: nothing reaches the real kernel log, modprobe or power. */
export function testEnv(sandbox: Sandbox): Record<string, string> {
  return {
    CAIRN_KMSG: '/kmsg',
    CAIRN_MODPROBE: 'true',
    CAIRN_KVER: KVER,
    CAIRN_FATAL_WAIT: '0',
    CAIRN_POWEROFF: sandbox.fakePoweroff,
    CAIRN_SHELL: sandbox.fakeShell,
    CAIRN_FIND_TIMEOUT: '3',
  };
}

export interface RootOptions {
  cmdline?: string;
  /** MemTotal in /proc/meminfo, kB. */
  memKiB?: number;
  bootId?: string;
}

export interface LibOptions {
  /** "$ROOT": a fake root made by Sandbox.root(). */
  root: string;
  env?: Record<string, string>;
  /** Host directories bound into the root (default: /dev, for loop and zram nodes). */
  binds?: Array<'dev' | 'sys'>;
  /** Mount a tmpfs on $ROOT/run, as mount_pseudo would (default true). */
  run?: boolean;
  input?: string;
  /**
   * Run in this unpacked initramfs (testInitramfs()) with its busybox and
   * programs and its copy of the library, the sandbox bound in.
   */
  initramfs?: string;
  /** As PID 1, as the kernel starts /init (see ShOptions). */
  pid1?: boolean;
  /** On a pseudo-terminal that is no controlling terminal, as /init's console (see ShOptions). */
  console?: boolean;
}

/** One scratch directory with the loop devices and zram devices made in it. */
export class Sandbox {
  readonly fakePoweroff: string;
  readonly fakeShell: string;
  private loops: string[] = [];
  private readonly zramBefore = zramDevices();

  private constructor(readonly dir: string) {
    this.fakePoweroff = join(dir, 'fake-poweroff');
    this.fakeShell = join(dir, 'fake-shell');
  }

  static async create(name: string): Promise<Sandbox> {
    const sb = new Sandbox(await mkdtemp(join(tmpdir(), `cairn-initramfs-${name}-`)));
    // /bin/sh: there on this machine and in every initramfs the tests run in.
    await writeFile(sb.fakePoweroff, '#!/bin/sh\necho "FAKE-POWEROFF $*" >&2\n');
    await writeFile(sb.fakeShell, '#!/bin/sh\necho "FAKE-RESCUE-SHELL" >&2\n');
    await chmod(sb.fakePoweroff, 0o755);
    await chmod(sb.fakeShell, 0o755);
    return sb;
  }

  path(...parts: string[]): string {
    return join(this.dir, ...parts);
  }

  /** A fake root for "$ROOT": proc/cmdline, meminfo and boot_id are plain files. */
  async root(name: string, options: RootOptions = {}): Promise<string> {
    const root = this.path(name);
    for (const d of ['proc/sys/kernel/random', 'sys', 'dev', 'run']) await mkdir(join(root, d), { recursive: true });
    await writeFile(join(root, 'proc/cmdline'), `${options.cmdline ?? 'BOOT_IMAGE=/vmlinuz quiet'}\n`);
    await writeFile(join(root, 'proc/meminfo'), `MemTotal:       ${options.memKiB ?? 4_000_000} kB\nMemFree:        1000 kB\n`);
    await writeFile(join(root, 'proc/sys/kernel/random/boot_id'), `${options.bootId ?? 'b00710d0-0000-4000-8000-000000000001'}\n`);
    // is_mounted reads $ROOT/proc/mounts: show it the namespace's real mounts.
    await symlink('/proc/self/mounts', join(root, 'proc/mounts'));
    await writeFile(join(root, 'kmsg'), '');
    return root;
  }

  /** Runs SCRIPT after the library in busybox sh, in a private mount namespace. */
  async lib(script: string, options: LibOptions): Promise<ShResult> {
    const setup = (options.binds ?? ['dev']).map((d) => `mount --bind /${d} "$ROOT/${d}" || exit 98\n`);
    if (options.run !== false) setup.push('mount -t tmpfs run "$ROOT/run" || exit 98\n');
    const inInitramfs = options.initramfs !== undefined;
    return busyboxSh(prelude(inInitramfs ? '/lib/cairn' : LIB) + setup.join('') + script, {
      env: { ROOT: options.root, ...testEnv(this), ...options.env },
      input: options.input,
      initramfs: inInitramfs ? { tree: options.initramfs!, binds: [this.dir] } : undefined,
      pid1: options.pid1,
      console: options.console,
    });
  }

  /** Attaches IMAGE to a loop device, detached at cleanup. */
  async attach(image: string): Promise<string> {
    const { stdout } = await execa('losetup', ['--find', '--show', image]);
    this.loops.push(stdout.trim());
    return stdout.trim();
  }

  /** Resets and removes the zram devices set up since the sandbox was made. */
  resetZram(): void {
    restoreZram(this.zramBefore);
  }

  async cleanup(): Promise<void> {
    for (const dev of this.loops) await execa('losetup', ['-d', dev], { reject: false });
    this.loops = [];
    await detachLeakedLoops(this.dir);
    restoreZram(this.zramBefore);
    const stillMounted = readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[1] ?? '')
      .filter((m) => m.startsWith(this.dir));
    for (const m of stillMounted.reverse()) await execa('umount', ['-l', m], { reject: false });
    await rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * Loop devices the library set up (mount -o loop) over files in DIR are
 * released by the kernel when the test's namespace goes; wait for that,
 * then detach whatever is left.
 */
async function detachLeakedLoops(dir: string): Promise<void> {
  const leaked = async () => {
    const r = await execa('losetup', ['--list', '--noheadings', '--raw', '-O', 'NAME,BACK-FILE'], { reject: false });
    return r.stdout
      .split('\n')
      .map((l) => l.split(' '))
      .filter(([, file]) => file?.startsWith(dir))
      .map(([dev]) => dev!);
  };
  for (let i = 0; i < 50 && (await leaked()).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
  for (const dev of await leaked()) await execa('losetup', ['-d', dev], { reject: false });
}

/** zram devices by name, with their disksize. */
export function zramDevices(): Map<string, string> {
  const out = new Map<string, string>();
  if (!existsSync('/sys/block')) return out;
  for (const name of readdirSync('/sys/block').filter((n) => /^zram[0-9]+$/.test(n))) {
    out.set(name, readFileSync(`/sys/block/${name}/disksize`, 'utf8').trim());
  }
  return out;
}

/** Resets zram devices set up since BEFORE and removes the ones added since. */
export function restoreZram(before: Map<string, string>): void {
  for (const [name, size] of zramDevices()) {
    const was = before.get(name);
    if (size !== '0' && (was === undefined || was === '0')) resetZramDevice(name);
    if (was === undefined && existsSync('/sys/class/zram-control/hot_remove')) {
      writeFileSync('/sys/class/zram-control/hot_remove', name.slice('zram'.length));
    }
  }
}

/**
 * Resets zram device NAME. The ext4 a test's boot mounted on it goes with
 * the test's mount namespace, but the kernel can let the device go a moment
 * after the namespace's last process has exited (seen in CI runs, with a
 * guest beside them, since the upper layer's ext4 is made by mkfs.ext4):
 * until then a reset is refused with EBUSY, so it is tried again for up to
 * ten seconds.
 */
function resetZramDevice(name: string): void {
  const until = Date.now() + 10_000;
  for (;;) {
    try {
      writeFileSync(`/sys/block/${name}/reset`, '1');
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EBUSY' || Date.now() > until) throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    }
  }
}

/** Fails with the reason unless the kernel has zram (loading the module if need be) and overlayfs. */
export async function requireZramAndOverlay(): Promise<void> {
  const zram = () => existsSync('/sys/class/zram-control') || existsSync('/sys/block/zram0');
  if (!zram()) await execa('modprobe', ['zram'], { reject: false });
  if (!zram()) throw new Error('these tests need zram: the kernel has none (modprobe zram failed)');
  if (!readFileSync('/proc/filesystems', 'utf8').includes('\toverlay\n')) {
    await execa('modprobe', ['overlay'], { reject: false });
    if (!readFileSync('/proc/filesystems', 'utf8').includes('\toverlay\n')) throw new Error('these tests need overlayfs: the kernel has none');
  }
}

/** A label unique to this run, so that findfs cannot find another test's partition. */
export function uniqueLabel(): string {
  return `ct-${randomBytes(4).toString('hex')}`;
}

export async function mksquashfs(src: string, out: string): Promise<void> {
  await execa('mksquashfs', [src, out, '-noappend', '-quiet', '-no-progress']);
}

/**
 * The base system: /etc/hostname says "lower", /etc/gone and /etc/od/old are
 * what a state deletes and hides, /sbin/init is INIT (a busybox script) when given.
 */
export async function writeLowerTree(dir: string, init?: string): Promise<void> {
  for (const d of ['etc/od', 'sbin', 'bin', 'persist', 'run', 'dev', 'proc', 'sys', 'lib/modules', 'lib/firmware']) {
    await mkdir(join(dir, d), { recursive: true });
  }
  await writeFile(join(dir, 'etc/hostname'), 'lower\n');
  await writeFile(join(dir, 'etc/gone'), 'deleted by the state\n');
  await writeFile(join(dir, 'etc/kept'), 'kept\n');
  await writeFile(join(dir, 'etc/od/old'), 'hidden by the opaque dir\n');
  if (init !== undefined) {
    await copyFile('/usr/bin/busybox', join(dir, 'bin/busybox'));
    await symlink('busybox', join(dir, 'bin/sh'));
    await writeFile(join(dir, 'sbin/init'), init, { mode: 0o755 });
  }
}

/**
 * A saved upper dir as overlayfs leaves it: /etc/hostname says TAG, /etc/gone
 * is a whiteout (char device 0/0), /etc/od is opaque (trusted.overlay.opaque=y)
 * and holds /etc/od/new, /home/user/notes is new. EXTRA_MIB of random data
 * make it big.
 */
export async function writeStateTree(dir: string, tag: string, extraMiB = 0): Promise<void> {
  await mkdir(join(dir, 'etc/od'), { recursive: true });
  await mkdir(join(dir, 'home/user'), { recursive: true });
  await writeFile(join(dir, 'etc/hostname'), `${tag}\n`);
  await writeFile(join(dir, 'etc/od/new'), `new in ${tag}\n`);
  await writeFile(join(dir, 'home/user/notes'), `notes of ${tag}\n`);
  await execa('mknod', [join(dir, 'etc/gone'), 'c', '0', '0']);
  await execa('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', join(dir, 'etc/od')]);
  for (let i = 0; i < extraMiB; i++) await writeFile(join(dir, `home/user/big-${i}`), randomBytes(1 << 20));
}

/**
 * A sealed state image at OUT whose /etc/hostname says TAG; with CKSUM its
 * seal has cksum_fix, as cairn seals states now, without it the seal is an
 * older cairn's.
 */
export async function buildState(sandbox: Sandbox, out: string, tag: string, extraMiB = 0, options: { cksum?: boolean } = {}): Promise<SealFields> {
  const tree = sandbox.path(`tree-${tag}-${randomBytes(3).toString('hex')}`);
  await writeStateTree(tree, tag, extraMiB);
  return sealTree(tree, out, tag, options);
}

/** Squashes TREE into OUT and seals it as the runtime does, with the space its files take (du: blocks, not sizes). */
export async function sealTree(tree: string, out: string, tag: string, options: { cksum?: boolean } = {}): Promise<SealFields> {
  await mksquashfs(tree, out);
  const space = Number((await execa('du', ['-s', '-B1', tree])).stdout.split('\t')[0]);
  await rm(tree, { recursive: true, force: true });
  return sealImage(out, { id: `id-${tag}`, space }, options);
}

/** A copy of a sealed image cut short: half of it. */
export async function truncatedCopy(src: string, dst: string): Promise<void> {
  await copyFile(src, dst);
  const size = (await readFile(src)).length;
  await truncate(dst, Math.floor(size / 2));
}

/** A copy of a sealed image with one bit of its squashfs part flipped. */
export async function bitFlippedCopy(src: string, dst: string, offset = 1000): Promise<void> {
  await copyFile(src, dst);
  const fh = await open(dst, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, offset);
    b[0] = b[0]! ^ 0x10;
    await fh.write(b, 0, 1, offset);
  } finally {
    await fh.close();
  }
}

export interface DataPartition {
  image: string;
  dev: string;
  label: string;
}

/**
 * A real data partition: ext4 labelled LABEL (unique by default) holding
 * FILES (name on the partition -> file to copy), on a loop device.
 */
export async function dataPartition(
  sandbox: Sandbox,
  files: Record<string, string>,
  options: { label?: string; sizeMiB?: number } = {},
): Promise<DataPartition> {
  const label = options.label ?? uniqueLabel();
  const stage = sandbox.path(`stage-${label}`);
  await mkdir(stage, { recursive: true });
  for (const [name, src] of Object.entries(files)) {
    await mkdir(dirname(join(stage, name)), { recursive: true });
    await copyFile(src, join(stage, name));
  }
  const image = sandbox.path(`${label}.img`);
  await writeFile(image, '');
  await truncate(image, (options.sizeMiB ?? 64) << 20);
  await execa('mkfs.ext4', ['-q', '-F', '-L', label, '-d', stage, image]);
  await rm(stage, { recursive: true, force: true });
  return { image, dev: await sandbox.attach(image), label };
}

/**
 * The packages of the alpine base the initramfs carries programs from, and
 * what they need: Alpine's real busybox, e2fsprogs (mkfs.ext4), sfdisk and musl.
 */
const ALPINE_INITRAMFS_PACKAGES = [
  'musl', 'busybox', 'e2fsprogs', 'e2fsprogs-libs', 'libcom_err', 'libblkid', 'libuuid', 'sfdisk', 'libfdisk', 'libsmartcols', 'libncursesw',
];

/**
 * An image root of the alpine base as far as the initramfs sees it, from
 * Alpine's real packages (../shared/alpine). squashfs-tools, attr and
 * e2fsprogs-extra are not among them: unsquashfs, setfattr and resize2fs
 * are STAND-INS, copies of Alpine's
 * busybox (musl programs the build carries with their loader, never run by
 * the tests that use this root). Alpine's busybox gets its applet links as
 * its package's trigger gives them.
 */
export async function alpineRoot(dir: string): Promise<string> {
  await unpackAlpinePackages(dir, ALPINE_INITRAMFS_PACKAGES);
  // What alpine-baselayout would have made.
  for (const d of ['usr/bin', 'usr/sbin']) await mkdir(join(dir, d), { recursive: true });
  for (const standIn of ['usr/bin/unsquashfs', 'usr/bin/setfattr', 'usr/sbin/resize2fs']) await copyFile(join(dir, 'bin/busybox'), join(dir, standIn));
  await execa('chroot', [dir, '/bin/busybox', '--install', '-s']);
  return dir;
}

/**
 * The initramfs cairn builds from PROGRAMROOT's programs (busybox: BUSYBOX
 * when given), unpacked with cpio into DIR: the tree tests run the library
 * in. The kernel modules tree is an empty stand-in saying the modules the
 * boot requires are built in, so no kernel is needed.
 */
export async function testInitramfs(dir: string, programRoot: string, busybox?: string): Promise<{ tree: string; report: InitramfsReport }> {
  const kernel = join(dir, 'kernel');
  const modules = join(kernel, 'lib/modules', KVER);
  await mkdir(modules, { recursive: true });
  await writeFile(join(modules, 'modules.dep'), '');
  await writeFile(join(modules, 'modules.alias'), '');
  await writeFile(join(modules, 'modules.builtin'), REQUIRED_MODULES.map((m) => `kernel/${m}.ko\n`).join(''));
  const output = join(dir, 'initramfs.gz');
  const report = await buildInitramfs({ kernelVersion: KVER, modulesDir: kernel, output, programRoot, busybox });
  const tree = join(dir, 'tree');
  await mkdir(tree);
  await execa('sh', ['-c', `zcat '${output}' | cpio -i -d -m --quiet`], { cwd: tree });
  return { tree, report };
}
