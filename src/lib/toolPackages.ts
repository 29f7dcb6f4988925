import { existsSync, realpathSync } from 'node:fs';
import { basename, delimiter, join } from 'node:path';

/**
 * The package that brings each program cairn runs, on each base. Alpine
 * splits util-linux into a package per program (losetup, setpriv, blkid,
 * ...) and attr's getfattr is not busybox's; Debian puts losetup in mount
 * and sfdisk in fdisk. A missing program is named with both.
 */
const PACKAGES: Record<string, { alpine: string; debian: string }> = {
  mksquashfs: { alpine: 'squashfs-tools', debian: 'squashfs-tools' },
  unsquashfs: { alpine: 'squashfs-tools', debian: 'squashfs-tools' },
  getfattr: { alpine: 'attr', debian: 'attr' },
  setfattr: { alpine: 'attr', debian: 'attr' },
  losetup: { alpine: 'losetup', debian: 'mount' },
  mount: { alpine: 'mount', debian: 'mount' },
  umount: { alpine: 'umount', debian: 'mount' },
  setpriv: { alpine: 'setpriv', debian: 'util-linux' },
  blkid: { alpine: 'blkid', debian: 'util-linux' },
  lsblk: { alpine: 'lsblk', debian: 'util-linux' },
  findmnt: { alpine: 'findmnt', debian: 'util-linux' },
  sfdisk: { alpine: 'sfdisk', debian: 'fdisk' },
  'mkfs.ext4': { alpine: 'e2fsprogs', debian: 'e2fsprogs' },
  e2fsck: { alpine: 'e2fsprogs', debian: 'e2fsprogs' },
  debugfs: { alpine: 'e2fsprogs-extra', debian: 'e2fsprogs' },
  resize2fs: { alpine: 'e2fsprogs-extra', debian: 'e2fsprogs' },
  'mkfs.vfat': { alpine: 'dosfstools', debian: 'dosfstools' },
  mcopy: { alpine: 'mtools', debian: 'mtools' },
  mmd: { alpine: 'mtools', debian: 'mtools' },
  cryptsetup: { alpine: 'cryptsetup', debian: 'cryptsetup-bin' },
  depmod: { alpine: 'kmod', debian: 'kmod' },
  perl: { alpine: 'perl', debian: 'perl-base' },
  openssl: { alpine: 'openssl', debian: 'openssl' },
  cksum: { alpine: 'coreutils', debian: 'coreutils' },
};

/** What to tell a user who lacks PROGRAM: the package that brings it on each base, or FALLBACK. */
export function toolHint(program: string, fallback?: string): string {
  const p = PACKAGES[program];
  if (!p) return fallback ?? `install ${program}`;
  return `install ${p.alpine === p.debian ? p.alpine : `${p.alpine} on alpine / ${p.debian} on debian`} (apk add ${p.alpine} / apt-get install ${p.debian})`;
}

/**
 * Programs whose busybox applet lacks the options cairn passes (setpriv
 * --pdeathsig, losetup --direct-io and --associated, lsblk, blkid -L's
 * exit status): found as busybox's, they count as missing. Alpine links
 * every applet into PATH where the real program is not installed.
 */
const NOT_BUSYBOX = new Set(['setpriv', 'losetup', 'lsblk', 'blkid', 'findmnt']);

const busyboxChecked = new Map<string, string | undefined>();

/**
 * Where PROGRAM is found on PATH when it is busybox's applet and cairn
 * needs the real one; undefined otherwise (found as the real one, or not
 * at all, which running it reports).
 */
export function busyboxStandIn(program: string): string | undefined {
  if (!NOT_BUSYBOX.has(program)) return undefined;
  const key = `${program}\0${process.env.PATH ?? ''}`;
  if (!busyboxChecked.has(key)) {
    const found = (process.env.PATH ?? '').split(delimiter).map((d) => join(d, program)).find((p) => existsSync(p));
    busyboxChecked.set(key, found && isBusybox(found) ? found : undefined);
  }
  return busyboxChecked.get(key);
}

/** Whether PATH is busybox itself or a link to it. */
export function isBusybox(path: string): boolean {
  try {
    return basename(realpathSync(path)).startsWith('busybox');
  } catch {
    return false;
  }
}
