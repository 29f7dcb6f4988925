/**
 * The programs an initramfs carries besides busybox, found on the build
 * host's PATH, and busybox's applets.
 */
import { accessSync, constants, realpathSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { AppletMissingError, ToolMissingError } from '../lib/errors.js';
import { run } from '../lib/run.js';

const SYSTEM_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** Packages that bring each program, for the message when one is missing. */
const HINTS: Record<string, string> = {
  busybox: 'install a static busybox (apt-get install busybox-static / apk add busybox-static) or pass --busybox',
  unsquashfs: 'install squashfs-tools (apt-get install squashfs-tools / apk add squashfs-tools)',
  cryptsetup: 'install cryptsetup (apt-get install cryptsetup-bin / apk add cryptsetup)',
};

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** The program NAME on PATH (and the usual sbin dirs), or undefined. */
export function findProgram(name: string, path = process.env.PATH ?? ''): string | undefined {
  const dirs = [...path.split(':').filter((d) => d.startsWith('/')), ...SYSTEM_DIRS];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

/** The program NAME, or a ToolMissingError saying what to install. */
export function requireProgram(name: string, given?: string): string {
  if (given !== undefined) {
    if (!isExecutable(given)) throw new ToolMissingError(given, HINTS[name] ?? `install ${name}`);
    return given;
  }
  const found = findProgram(name);
  if (!found) throw new ToolMissingError(name, HINTS[name] ?? `install ${name}`);
  return found;
}

/** util-linux's blkid, if the build host has it (busybox's knows less and is not it). */
export function findUtilLinuxBlkid(): string | undefined {
  const found = findProgram('blkid');
  return found && basename(realpathSync(found)) !== 'busybox' ? found : undefined;
}

/**
 * The applets the early boot (initramfs/init and lib/*.sh) runs. The kernel
 * itself runs /sbin/modprobe for modules it asks for by alias.
 */
export const REQUIRED_APPLETS = [
  'sh', 'mount', 'umount', 'switch_root', 'modprobe', 'findfs', 'mke2fs', 'awk', 'sed', 'grep',
  'sha256sum', 'stat', 'setsid', 'cttyhack', 'sleep', 'cat', 'echo', 'printf', 'test', 'mkdir',
  'rm', 'mv', 'tr', 'head', 'tail', 'sort', 'xargs', 'find', 'date', 'stty', 'sync', 'poweroff',
  'uname', 'ls',
] as const;

/**
 * Busybox's applets as archive paths ("sbin/modprobe"), from --list-full,
 * or all in bin/ when this busybox only knows --list. Missing required
 * applets are an error naming them.
 */
export async function busyboxApplets(busybox: string): Promise<string[]> {
  let paths: string[];
  const full = await run(busybox, ['--list-full'], { timeoutMs: 10_000, okExitCodes: [1] });
  if (full.exitCode === 0 && full.stdout.trim()) {
    paths = full.stdout.split('\n').map((l) => l.trim()).filter((l) => /^(usr\/)?s?bin\/[^/]+$/.test(l));
  } else {
    const list = await run(busybox, ['--list'], { timeoutMs: 10_000 });
    paths = list.stdout.split('\n').map((l) => l.trim()).filter((l) => /^[^/\s]+$/.test(l)).map((l) => `bin/${l}`);
  }
  const have = new Set(paths.map((p) => basename(p)));
  const missing = REQUIRED_APPLETS.filter((a) => !have.has(a));
  if (missing.length > 0) throw new AppletMissingError(busybox, missing);
  return paths.sort();
}
