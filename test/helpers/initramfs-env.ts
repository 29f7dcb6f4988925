/**
 * Running the initramfs's sh the way the initramfs runs it: busybox sh, as
 * root, in a private mount namespace so that every mount it makes goes away
 * with it. Tests that cannot run here fail with the reason; none is skipped.
 */
import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export const BUSYBOX = '/usr/bin/busybox';

/** A PATH with the system's tools; busybox sh still prefers its applets. */
export const SYSTEM_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';

/** Debian packages that provide the tools the initramfs tests use. */
const PACKAGES: Record<string, string> = {
  busybox: 'busybox-static',
  unshare: 'util-linux',
  losetup: 'mount',
  blkid: 'util-linux',
  findfs: 'util-linux',
  zramctl: 'util-linux',
  mksquashfs: 'squashfs-tools',
  unsquashfs: 'squashfs-tools',
  'mkfs.ext4': 'e2fsprogs',
  setfattr: 'attr',
  getfattr: 'attr',
  cryptsetup: 'cryptsetup-bin',
  shellcheck: 'shellcheck',
  shfmt: 'shfmt',
};

/** Fails, with what to do, unless the tests run as root. */
export function requireRoot(why: string): void {
  if (process.getuid?.() !== 0) {
    throw new Error(`these tests need root (${why}); run them as root`);
  }
}

/** Fails, naming the package to install, unless every tool is on the system PATH. */
export function requireTools(tools: string[]): void {
  const dirs = SYSTEM_PATH.split(':');
  const missing = tools.filter((t) => !dirs.some((d) => existsSync(join(d, t))));
  if (missing.length > 0) {
    const pkgs = [...new Set(missing.map((t) => PACKAGES[t] ?? t))];
    throw new Error(`these tests need ${missing.join(', ')}: apt-get install ${pkgs.join(' ')}`);
  }
}

export interface ShResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface ShOptions {
  /** The whole environment of the shell (PATH is added). */
  env?: Record<string, string>;
  /** What the shell reads on stdin (the console). */
  input?: string;
  /** Run in a private mount namespace (default) or in the test's own. */
  namespace?: boolean;
  timeoutMs?: number;
}

/** Runs a script with busybox sh, by default in a private mount namespace. */
export async function busyboxSh(script: string, options: ShOptions = {}): Promise<ShResult> {
  const argv = [BUSYBOX, 'sh', '-c', script];
  const [cmd, ...args] = options.namespace === false ? argv : ['unshare', '-m', '--propagation', 'private', ...argv];
  const r = await execa(cmd!, args, {
    reject: false,
    extendEnv: false,
    env: { PATH: SYSTEM_PATH, ...options.env },
    input: options.input ?? '',
    timeout: options.timeoutMs ?? 120_000,
  });
  if (r.timedOut) throw new Error(`busybox sh timed out:\n${r.stderr}`);
  return { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** The key=value lines of a text (the last one of each key wins). */
export function keyValues(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}
