/**
 * The programs an initramfs carries besides busybox, found on this machine's
 * PATH or in a root of their own (an image's root, before it boots), and
 * busybox's applets.
 */
import { accessSync, constants, readlinkSync, statSync } from 'node:fs';
import { basename, join, posix } from 'node:path';
import { AppletMissingError, ToolMissingError } from '../lib/errors.js';
import { run, type RunOptions, type RunResult } from '../lib/run.js';
import { toolHint } from '../lib/toolPackages.js';

const SYSTEM_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/**
 * What to do about a busybox that is missing (PROBLEM "missing") or lacks
 * applets: on this machine another one can be given to `cairn initramfs
 * build`; an image's comes from its base's package, so only the repository
 * serving it can change it.
 */
export function busyboxHint(root: string, problem: 'missing' | 'applets'): string {
  if (root === '/') {
    return problem === 'missing'
      ? 'install busybox (apt-get install busybox-static / apk add busybox), or give one with cairn initramfs build --busybox PATH'
      : "give a busybox that has them with cairn initramfs build --busybox PATH (Debian's busybox-static and Alpine's busybox have them all)";
  }
  return problem === 'missing'
    ? "the base's busybox package (Debian: busybox-static; Alpine: busybox) put none in the image: build from a --mirror (debian) or --repository (alpine) that serves it"
    : "the image's busybox is its base's package (Debian: busybox-static; Alpine: busybox): build from a --mirror (debian) or --repository (alpine) whose busybox has them";
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * PATH inside ROOT with every symlink followed as it would be inside ROOT
 * (an absolute link target starts again at ROOT, not at this machine's /),
 * as a path on this machine.
 */
export function realpathIn(root: string, path: string): string {
  const todo = path.split('/').filter(Boolean);
  let at = '/';
  for (let hops = 0; todo.length > 0; ) {
    const part = todo.shift()!;
    if (part === '.') continue;
    if (part === '..') {
      at = posix.dirname(at);
      continue;
    }
    const next = posix.join(at, part);
    let target: string;
    try {
      target = readlinkSync(join(root, next));
    } catch (e) {
      // Not a link (EINVAL), or not there: the path leads nowhere, and the caller finds no file.
      if (!['EINVAL', 'ENOENT', 'ENOTDIR'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
      at = next;
      continue;
    }
    if (++hops > 40) throw new Error(`${path} in ${root}: too many levels of symbolic links`);
    if (target.startsWith('/')) at = '/';
    todo.unshift(...target.split('/').filter(Boolean));
  }
  return join(root, at);
}

/** Runs a program of ROOT: in a chroot, so that its loader finds ROOT's libraries. */
export function runIn(root: string, file: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
  return root === '/' ? run(file, args, options) : run('chroot', [root, file, ...args], options);
}

/**
 * The program NAME as a path in ROOT: on PATH (and the usual sbin dirs) for
 * this machine, in the usual dirs for any other root; or undefined.
 */
export function findProgram(name: string, path = process.env.PATH ?? '', root = '/'): string | undefined {
  const onPath = root === '/' ? path.split(':').filter((d) => d.startsWith('/')) : [];
  for (const dir of [...onPath, ...SYSTEM_DIRS]) {
    const candidate = join(dir, name);
    if (isExecutable(realpathIn(root, candidate))) return candidate;
  }
  return undefined;
}

/** The program NAME (a path in ROOT), or a ToolMissingError saying what to install. */
export function requireProgram(name: string, given?: string, root = '/'): string {
  const hint = name === 'busybox' ? busyboxHint(root, 'missing') : toolHint(name);
  if (given !== undefined) {
    if (!isExecutable(realpathIn(root, given))) throw new ToolMissingError(given, hint);
    return given;
  }
  const found = findProgram(name, undefined, root);
  if (!found) throw new ToolMissingError(root === '/' ? name : `${name} in ${root}`, hint);
  return found;
}

/** The program NAME of ROOT when it is not busybox's applet, or undefined. */
export function findNotBusybox(name: string, root = '/'): string | undefined {
  const found = findProgram(name, undefined, root);
  return found && basename(realpathIn(root, found)) !== 'busybox' ? found : undefined;
}

/** util-linux's blkid, if ROOT has it (busybox's knows less and is not it). */
export function findUtilLinuxBlkid(root = '/'): string | undefined {
  return findNotBusybox('blkid', root);
}

/**
 * The cksum the boot checks a state with (initramfs/lib/state.sh
 * state_verify): coreutils' where ROOT has it (Debian's), about ten times
 * faster than busybox's on a CPU with carry-less multiply, else busybox's
 * applet (Alpine's busybox has one, Debian's busybox-static none), or a
 * missing-applet error.
 */
export function cksumFor(root: string, busybox: string, applets: readonly string[]): string | undefined {
  const real = findNotBusybox('cksum', root);
  if (real) return real;
  if (applets.some((a) => basename(a) === 'cksum')) return undefined;
  throw new AppletMissingError(busybox, ['cksum'], `${busyboxHint(root, 'applets')}, or ${toolHint('cksum')}`);
}

/**
 * The applets the early boot (initramfs/init and lib/*.sh) runs. The kernel
 * itself runs /sbin/modprobe for modules it asks for by alias. Only what
 * every base's busybox has: Alpine's (busybox and busybox-static alike) has
 * no mke2fs and no cttyhack, so the zram upper layer's ext4 comes from
 * e2fsprogs' mkfs.ext4 (carried as a program) and the rescue shell takes
 * the console as its terminal with setsid -c.
 */
export const REQUIRED_APPLETS = [
  'sh', 'mount', 'umount', 'switch_root', 'modprobe', 'findfs', 'awk', 'sed', 'grep',
  'sha256sum', 'stat', 'setsid', 'sleep', 'cat', 'echo', 'printf', 'test', 'mkdir',
  'rm', 'mv', 'tr', 'head', 'tail', 'sort', 'xargs', 'find', 'date', 'stty', 'sync', 'poweroff',
  'uname', 'ls', 'chmod', 'chown', 'dd', 'touch', 'ln', 'timeout', 'od', 'blockdev', 'mktemp', 'kill', 'wc',
] as const;

/**
 * Busybox's applets as archive paths ("sbin/modprobe"), from --list-full,
 * or all in bin/ when this busybox only knows --list. Missing required
 * applets are an error naming them.
 */
export async function busyboxApplets(busybox: string, root = '/'): Promise<string[]> {
  let paths: string[];
  const full = await runIn(root, busybox, ['--list-full'], { timeoutMs: 10_000, okExitCodes: [1] });
  if (full.exitCode === 0 && full.stdout.trim()) {
    paths = full.stdout.split('\n').map((l) => l.trim()).filter((l) => /^(usr\/)?s?bin\/[^/]+$/.test(l));
  } else {
    const list = await runIn(root, busybox, ['--list'], { timeoutMs: 10_000 });
    paths = list.stdout.split('\n').map((l) => l.trim()).filter((l) => /^[^/\s]+$/.test(l)).map((l) => `bin/${l}`);
  }
  const have = new Set(paths.map((p) => basename(p)));
  const missing = REQUIRED_APPLETS.filter((a) => !have.has(a));
  if (missing.length > 0) throw new AppletMissingError(busybox, missing, busyboxHint(root, 'applets'));
  return paths.sort();
}
