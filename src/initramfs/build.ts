/**
 * Builds the initramfs: busybox and its applets, unsquashfs, setfattr (the
 * ACLs a state records, initramfs/lib/acl.sh), e2fsprogs' mkfs.ext4 (the
 * zram upper layer's ext4, with ea_inode; not every busybox has mke2fs,
 * and none makes ext4) and e2fsck (the data partition's check before it is
 * mounted), sfdisk and resize2fs (it grows to fill the stick), coreutils'
 * cksum where the root has it (the check of a state), cryptsetup for
 * an encrypted data partition, util-linux's blkid when there is one (from
 * this machine, or from the image's root an image build gives), the
 * shared libraries they need, the kernel modules the boot needs with their
 * dependencies, and the early-boot module (initramfs/init as /init, its
 * library as /lib/cairn). Packed as a reproducible newc cpio, gzipped (every
 * kernel unpacks gzip), written as temp file, fsync, rename.
 *
 * A plain function so that the image builder and kernel updates call it too;
 * `cairn initramfs build` is a thin wrapper.
 */
import { existsSync } from 'node:fs';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { fsyncFile, renameDurably } from '../lib/durable.js';
import { PathError } from '../lib/errors.js';
import { log } from '../lib/log.js';
import { bootModules } from './bootModules.js';
import { writeNewc } from './cpio.js';
import { sharedLibraries } from './elf.js';
import { moduleIndexFiles, readModuleIndex, selectModules } from './modules.js';
import { busyboxApplets, cksumFor, findUtilLinuxBlkid, realpathIn, requireProgram } from './programs.js';
import { ArchiveTree } from './tree.js';

export interface InitramfsOptions {
  kernelVersion: string;
  /** The directory holding lib/modules/<kernelVersion> (/ for this machine). */
  modulesDir: string;
  output: string;
  /** Carry cryptsetup and dm-crypt, for an encrypted data partition. */
  luks?: boolean;
  /** The busybox to carry (default: busybox on PATH, or in programRoot). */
  busybox?: string;
  /**
   * Where busybox, unsquashfs, setfattr, mkfs.ext4, e2fsck, sfdisk, resize2fs, cryptsetup and blkid and their
   * libraries come from: this machine (/, the default) or an image's root,
   * so that an image's initramfs carries the image's own programs.
   */
  programRoot?: string;
  /** The early-boot module: a directory with init and lib/*.sh (default: cairn's own). */
  initDir?: string;
  /** More modules the boot needs (required: a missing one is an error). */
  extraModules?: readonly string[];
}

export interface InitramfsReport {
  output: string;
  /** Bytes of the compressed archive. */
  bytes: number;
  /** Bytes of the cpio before compression. */
  cpioBytes: number;
  entries: number;
  modules: string[];
  builtinModules: string[];
  absentModules: string[];
  programs: { name: string; path: string; libraries: string[] }[];
  seconds: number;
}

/** Where initramfs/init and its lib live when not given: beside cairn's code, or installed. */
export function defaultInitDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'initramfs', 'init')) && existsSync(join(dir, 'initramfs', 'lib', 'main.sh'))) {
      return join(dir, 'initramfs');
    }
    dir = dirname(dir);
  }
  const installed = '/usr/share/cairn/initramfs';
  if (existsSync(join(installed, 'init'))) return installed;
  throw new PathError('initramfs/init', 'the early-boot module was not found beside cairn', 'pass --init-dir DIR (the directory holding init and lib/)');
}

export async function buildInitramfs(opts: InitramfsOptions): Promise<InitramfsReport> {
  const started = Date.now();
  const luks = opts.luks ?? false;
  const tree = new ArchiveTree();

  const index = await readModuleIndex(resolve(opts.modulesDir), opts.kernelVersion);
  const selection = selectModules(index, bootModules({ luks, extra: opts.extraModules }));

  const root = opts.programRoot ?? '/';
  const busybox = requireProgram('busybox', opts.busybox, root);
  const programs = [
    { name: 'unsquashfs', path: requireProgram('unsquashfs', undefined, root) },
    { name: 'setfattr', path: requireProgram('setfattr', undefined, root) },
    { name: 'mkfs.ext4', path: requireProgram('mkfs.ext4', undefined, root) },
    // The data partition's check before it is mounted (initramfs/lib/data.sh).
    { name: 'e2fsck', path: requireProgram('e2fsck', undefined, root) },
    // The data partition grows to fill the stick (initramfs/lib/grow.sh).
    { name: 'sfdisk', path: requireProgram('sfdisk', undefined, root) },
    { name: 'resize2fs', path: requireProgram('resize2fs', undefined, root) },
    ...(luks ? [{ name: 'cryptsetup', path: requireProgram('cryptsetup', undefined, root) }] : []),
    ...((b) => (b ? [{ name: 'blkid', path: b }] : []))(findUtilLinuxBlkid(root)),
  ];

  await addEarlyBoot(tree, opts.initDir ?? defaultInitDir());
  addSkeleton(tree);
  const carried: InitramfsReport['programs'] = [];
  carried.push(await addProgram(tree, 'bin/busybox', busybox, root));
  const applets = await busyboxApplets(busybox, root);
  for (const applet of applets) {
    if (!tree.has(applet)) tree.symlink(applet, '/bin/busybox');
  }
  const cksum = cksumFor(root, busybox, applets);
  if (cksum) programs.push({ name: 'cksum', path: cksum });
  for (const p of programs) {
    // Real programs in /usr/sbin, first on the init's PATH, ahead of any applet of the same name.
    carried.push({ ...(await addProgram(tree, `usr/sbin/${p.name}`, p.path, root)), name: p.name });
  }

  await addDlopened(tree, carried, root);

  const modDir = `lib/modules/${opts.kernelVersion}`;
  tree.dir(modDir);
  for (const rel of selection.paths) {
    tree.file(`${modDir}/${rel}`, await readFile(join(index.tree, rel)), 0o644);
  }
  for (const [name, data] of await moduleIndexFiles(index, selection)) tree.file(`${modDir}/${name}`, data, 0o644);

  const entries = tree.list();
  const cpio = writeNewc(entries);
  const gz = gzipSync(cpio, { level: 9 });
  await writeDurably(opts.output, gz);
  const report: InitramfsReport = {
    output: opts.output,
    bytes: gz.length,
    cpioBytes: cpio.length,
    entries: entries.length,
    modules: [...selection.names].sort(),
    builtinModules: selection.builtin,
    absentModules: selection.absent,
    programs: carried,
    seconds: (Date.now() - started) / 1000,
  };
  log.debug({ ...report, programs: carried.map((p) => p.path) }, 'initramfs built');
  return report;
}

/** /init and /lib/cairn/*.sh. */
async function addEarlyBoot(tree: ArchiveTree, initDir: string): Promise<void> {
  const init = join(initDir, 'init');
  const lib = join(initDir, 'lib');
  if (!existsSync(init)) throw new PathError(init, 'the early boot script is missing', 'pass --init-dir DIR (the directory holding init and lib/)');
  tree.file('init', await readFile(init), 0o755);
  const scripts = (await readdir(lib)).filter((n) => n.endsWith('.sh')).sort();
  if (!scripts.includes('main.sh')) throw new PathError(lib, 'holds no main.sh: not the cairn early-boot library');
  for (const name of scripts) tree.file(`lib/cairn/${name}`, await readFile(join(lib, name)), 0o644);
}

/** The directories and device nodes the kernel and the init expect before devtmpfs. */
function addSkeleton(tree: ArchiveTree): void {
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'lib', 'proc', 'sys', 'run', 'etc', 'tmp', 'sysroot']) tree.dir(d);
  tree.dir('dev');
  // The kernel opens /dev/console for init's stdin/stdout/stderr before anything is mounted.
  tree.chardev('dev/console', 0o600, 5, 1);
  tree.chardev('dev/null', 0o666, 1, 3);
  tree.symlink('etc/mtab', '/proc/mounts');
}

/** A program (a path in ROOT) at DEST and each file its loader needs at the path the loader looks for it. */
async function addProgram(tree: ArchiveTree, dest: string, path: string, root: string): Promise<{ name: string; path: string; libraries: string[] }> {
  tree.file(dest, await readFile(realpathIn(root, path)), 0o755);
  const libraries = await sharedLibraries(path, root);
  for (const lib of libraries) {
    // The content the path leads to, stored under the path itself: no links
    // that dangle, and merged-/usr symlinks (/lib -> usr/lib) become real dirs.
    if (!tree.has(lib)) tree.file(lib, await readFile(realpathIn(root, lib)), 0o755);
  }
  return { name: basename(dest), path, libraries };
}

/**
 * glibc loads libgcc_s.so.1 with dlopen when a thread ends (cryptsetup's
 * argon2 runs threads; without it the unlock aborts), so the loader's list
 * never names it: it comes along from beside the libc it belongs to.
 */
const DLOPENED_BY_LIBC = ['libgcc_s.so.1'];

async function addDlopened(tree: ArchiveTree, carried: InitramfsReport['programs'], root: string): Promise<void> {
  const libcs = new Set(carried.flatMap((p) => p.libraries).filter((l) => basename(l) === 'libc.so.6'));
  for (const libc of libcs) {
    for (const name of DLOPENED_BY_LIBC) {
      const path = join(dirname(libc), name);
      const file = realpathIn(root, path);
      if (!tree.has(path) && existsSync(file)) tree.file(path, await readFile(file), 0o755);
    }
  }
}

/** Temp file in the same directory, fsync, rename, fsync of the directory. */
async function writeDurably(output: string, data: Buffer): Promise<void> {
  const tmp = join(dirname(resolve(output)), `.${basename(output)}.tmp-${process.pid}`);
  try {
    await writeFile(tmp, data, { mode: 0o644 });
    await fsyncFile(tmp);
    await renameDurably(tmp, output);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}
