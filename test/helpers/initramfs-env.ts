/**
 * Running the initramfs's sh the way the initramfs runs it: busybox sh, as
 * root, in a private mount namespace so that every mount it makes goes away
 * with it. Tests that cannot run here fail with the reason; none is skipped.
 */
import { execa } from 'execa';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

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
  script: 'bsdutils',
  cpio: 'cpio',
  chroot: 'coreutils',
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
  /**
   * Run in an unpacked initramfs, with its own busybox sh and programs:
   * chrooted into TREE, with this machine's /dev, /proc and /sys and the
   * directories BINDS (at their own paths) bound in. Implies the private
   * mount namespace.
   */
  initramfs?: { tree: string; binds: readonly string[] };
  /** Run as PID 1 of a new PID namespace, as the kernel starts /init. */
  pid1?: boolean;
  /**
   * Stdin, stdout and stderr on a new pseudo-terminal that is not the
   * shell's controlling terminal, as the kernel gives /init the console.
   * Everything written to it is in stdout, with CR LF line ends.
   */
  console?: boolean;
  timeoutMs?: number;
}

/** Binds what INITRAMFS needs into it ($1) and runs $0 there with its busybox sh; $2... are the directories to bind. */
const ENTER_INITRAMFS = `t=$1; shift
for d in dev proc sys; do mount -o bind "/$d" "$t/$d" || exit 97; done
for b; do mkdir -p "$t$b" && mount -o bind "$b" "$t$b" || exit 97; done
exec chroot "$t" /bin/busybox sh -c "$0"`;

function shQuote(word: string): string {
  return `'${word.replaceAll("'", "'\\''")}'`;
}

/** Runs a script with busybox sh, by default in a private mount namespace. */
export async function busyboxSh(script: string, options: ShOptions = {}): Promise<ShResult> {
  const { initramfs } = options;
  let argv = initramfs
    ? [BUSYBOX, 'sh', '-c', ENTER_INITRAMFS, script, initramfs.tree, ...initramfs.binds]
    : [BUSYBOX, 'sh', '-c', script];
  if (options.namespace !== false || initramfs || options.pid1) {
    argv = ['unshare', '-m', '--propagation', 'private', ...(options.pid1 ? ['-p', '-f'] : []), ...argv];
  }
  // setsid: the shell's session has no controlling terminal, as /init's has none.
  if (options.console) argv = ['script', '-q', '-e', '-c', ['setsid', '-w', ...argv].map(shQuote).join(' '), '/dev/null'];
  const [cmd, ...args] = argv;
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

/** Alpine's real packages (see its README), beside the repository: test data, never copied into it. */
export const ALPINE_PACKAGES = fileURLToPath(new URL('../../../shared/alpine/packages', import.meta.url));

/** Fails, saying where they belong, unless Alpine's real packages are there. */
export function requireAlpinePackages(): void {
  if (!existsSync(ALPINE_PACKAGES)) {
    throw new Error(`these tests need Alpine's real packages in ${ALPINE_PACKAGES} (../shared/alpine beside the repository, see its README); they are missing`);
  }
}

/** The .apk file of Alpine's package NAME (the one version there is). */
export function alpinePackage(name: string): string {
  requireAlpinePackages();
  const found = readdirSync(ALPINE_PACKAGES).filter((f) => f.startsWith(`${name}-`) && /^[0-9]/.test(f.slice(name.length + 1)) && f.endsWith('.apk'));
  if (found.length !== 1) throw new Error(`expected one ${name} package in ${ALPINE_PACKAGES}, found ${found.length}`);
  return join(ALPINE_PACKAGES, found[0]!);
}

/**
 * The files of Alpine's packages NAMES unpacked into DIR, as apk lays them
 * out (no scripts run, no database), without the packages' own headers.
 */
export async function unpackAlpinePackages(dir: string, names: readonly string[]): Promise<void> {
  await mkdir(dir, { recursive: true });
  // An .apk is gzip'd tar streams one after the other; tar reads through them all.
  for (const name of names) await execa('tar', ['-xzf', alpinePackage(name), '-C', dir, '--ignore-zeros', '--warning=no-unknown-keyword']);
  for (const f of readdirSync(dir).filter((n) => /^\.(PKGINFO|SIGN\.|pre-|post-|trigger)/.test(n))) await rm(join(dir, f));
}
