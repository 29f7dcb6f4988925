/**
 * What the VM tests boot: an initramfs built by the real `cairn initramfs
 * build`, a tiny base system (static busybox and an init that reports what
 * it sees), two states made by the real `cairn save` from upper dirs a real
 * overlayfs mount filled, and ext4 data disks labelled cairn-data holding
 * them, plain or inside LUKS2.
 */
import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readFile, rm, stat, symlink, truncate, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LUKS, writeLuksVolume } from '../../src/image/luks.js';
import { DATA, LABELS } from '../../src/names.js';
import { readSeal } from '../../src/state/seal.js';
import { CLI, Scratch } from './system.js';
import { QEMU } from './vm-qemu.js';

/** Each tool the VM tests run on the host, and the Debian package with it. */
const TOOLS: Record<string, string> = {
  [QEMU]: 'qemu-system-x86',
  setpriv: 'util-linux',
  cpio: 'cpio',
  busybox: 'busybox-static',
  mksquashfs: 'squashfs-tools',
  unsquashfs: 'squashfs-tools',
  'mkfs.ext4': 'e2fsprogs',
  losetup: 'mount',
  getfattr: 'attr',
  cryptsetup: 'cryptsetup-bin',
  'apt-get': 'apt',
  'apt-cache': 'apt',
  'dpkg-deb': 'dpkg',
  depmod: 'kmod',
  chroot: 'coreutils',
};

/** Fails, naming the Debian packages to install, unless every tool is on the system PATH. */
export function requireHostTools(who: string, tools: readonly string[]): void {
  const dirs = ['/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  const missing = tools.filter((t) => !dirs.some((d) => existsSync(join(d, t))));
  if (missing.length) {
    throw new Error(`${who} need ${missing.join(', ')}: apt-get install ${[...new Set(missing.map((t) => TOOLS[t] ?? t))].join(' ')}`);
  }
}

/** Fails, naming what to install, unless the VM tests can run here. Never skips. */
export function requireVmHost(): void {
  if (process.getuid?.() !== 0) throw new Error('the VM tests need root (overlayfs, loop devices for cairn save): run them as root');
  requireHostTools('the VM tests', Object.keys(TOOLS).filter((t) => t !== 'chroot'));
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build`);
}

/** Lines between these markers on the console are what the guest's init saw. */
export const REPORT_BEGIN = '==cairn-vm-report-begin==';
export const REPORT_END = '==cairn-vm-report-end==';

/** The base system's /sbin/init: reports the test files, the boot record and three mounts, then powers off. */
const REPORTING_INIT = `#!/bin/sh
# The VM tests' init: what this boot sees, as key=value lines between markers.
dmesg -n 1
echo "${REPORT_BEGIN}"
for f in state old-only new-only gone base; do
  if [ -e "/etc/cairn-test/$f" ]; then
    echo "file.$f=$(cat "/etc/cairn-test/$f")"
  else
    echo "file.$f=absent"
  fi
done
while IFS= read -r line; do echo "record.$line"; done </run/cairn/boot
awk '$2 == "/" || $2 == "/persist" || $2 == "/run/cairn/rw" { print "mount." $2 "=" $1 " " $3 " " substr($4, 1, 2) }' /proc/mounts
echo "${REPORT_END}"
poweroff -f
`;

/** The base tree: busybox with its applets, the reporting init, the files the states change. */
export async function writeBaseTree(dir: string): Promise<void> {
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc/cairn-test', 'proc', 'sys', 'dev', 'run', 'persist', 'tmp']) {
    await mkdir(join(dir, d), { recursive: true });
  }
  await copyFile('/usr/bin/busybox', join(dir, 'bin/busybox'));
  const { stdout } = await execa('/usr/bin/busybox', ['--list-full']);
  for (const applet of stdout.split('\n').filter((l) => /^(usr\/)?s?bin\/[^/]+$/.test(l))) {
    if (applet !== 'sbin/init' && applet !== 'bin/busybox') await symlink('/bin/busybox', join(dir, applet));
  }
  await writeFile(join(dir, 'sbin/init'), REPORTING_INIT, { mode: 0o755 });
  await writeFile(join(dir, 'etc/cairn-test/state'), 'base\n');
  await writeFile(join(dir, 'etc/cairn-test/base'), 'base\n');
  await writeFile(join(dir, 'etc/cairn-test/gone'), 'base file\n');
}

export interface States {
  /** A directory with rootfs.squashfs, upperfs.squashfs (new) and upperfs-backup.squashfs (old). */
  data: string;
  newId: string;
  oldId: string;
}

/**
 * Two sessions over the base, each through a real overlayfs mount (so the
 * kernel makes the upper dir, whiteouts and all), each saved with the real
 * `cairn save`: first "old", then "new", which rotates "old" to the backup.
 */
export async function buildStates(scratch: Scratch, base: string): Promise<States> {
  const data = scratch.path('states');
  await mkdir(data);
  await execa('mksquashfs', [base, join(data, DATA.rootfs), '-noappend', '-quiet', '-comp', 'gzip', '-all-root']);
  for (const session of ['old', 'new'] as const) {
    const ovl = await scratch.overlay(base, `session-${session}`);
    await writeFile(join(ovl.merged, 'etc/cairn-test/state'), `${session}\n`);
    await writeFile(join(ovl.merged, `etc/cairn-test/${session}-only`), `${session}\n`);
    await unlink(join(ovl.merged, 'etc/cairn-test/gone'));
    await scratch.unmount(ovl.merged);
    const r = await execa(process.execPath, [CLI, 'save', '--upper', ovl.upper, '--data', data, '--yes'], { reject: false });
    if (r.exitCode !== 0) throw new Error(`cairn save (${session}) failed: ${r.stderr}`);
  }
  const id = async (name: string) => {
    const s = await readSeal(join(data, name));
    if (!s.ok) throw new Error(`${name} has no valid seal: ${s.problem}`);
    return s.seal.id;
  };
  return { data, newId: await id(DATA.newest), oldId: await id(DATA.backup) };
}

/** A copy of FILE with one bit flipped in the middle of its squashfs part. */
export async function bitFlip(file: string, out: string): Promise<void> {
  const bytes = await readFile(file);
  bytes[Math.floor((bytes.length - 4096) / 2)]! ^= 0x10;
  await writeFile(out, bytes);
}

/** An ext4 image labelled cairn-data holding FILES (name -> host path), made without mounting. */
export async function dataDisk(scratch: Scratch, name: string, files: Record<string, string>, sizeMiB = 48): Promise<string> {
  const dir = scratch.path(`${name}-content`);
  await mkdir(dir);
  for (const [to, from] of Object.entries(files)) await copyFile(from, join(dir, to));
  const image = scratch.path(`${name}.img`);
  await execa('mkfs.ext4', ['-q', '-F', '-L', LABELS.data, '-d', dir, image, `${sizeMiB}M`]);
  await rm(dir, { recursive: true, force: true });
  return image;
}

/**
 * A LUKS2 container labelled cairn-data around the ext4 image PLAIN, for
 * PASSPHRASE, written as the image builder writes a stick's (src/image/luks.ts),
 * with a fast key derivation: the early-boot cases time the boot, not pbkdf.
 */
export async function luksDisk(scratch: Scratch, plain: string, passphrase: string): Promise<string> {
  const image = scratch.path('luks.img');
  await writeFile(image, '');
  await truncate(image, LUKS.headerBytes + (await stat(plain)).size);
  await writeLuksVolume({ plain, target: image, offsetBytes: 0, passphrase, label: LABELS.data, kdf: { type: 'pbkdf2', iterations: 1000 } });
  return image;
}

/** Builds an initramfs with the real CLI. */
export async function buildInitramfsWithCli(kernel: { version: string; root: string }, output: string, luks: boolean): Promise<string> {
  const r = await execa(process.execPath, [
    CLI, 'initramfs', 'build', '--kver', kernel.version, '--modules-dir', kernel.root, '--output', output,
    '--busybox', '/usr/bin/busybox', ...(luks ? ['--luks'] : []),
  ], { reject: false });
  if (r.exitCode !== 0) throw new Error(`cairn initramfs build failed: ${r.stderr}`);
  return r.stdout;
}

/** The key=value lines the guest reported between the markers. */
export function parseReport(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return out;
}
