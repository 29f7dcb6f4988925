/**
 * Every name and path that more than one part of cairn agrees on.
 *
 * The initramfs reads the same names from initramfs/lib/names.sh; a unit test
 * checks that the two files agree, so change both together.
 */

/** Files on the data partition (relative to its mount point). */
export const DATA = {
  rootfs: 'rootfs.squashfs',
  firmware: 'firmware.squashfs',
  newest: 'upperfs.squashfs',
  backup: 'upperfs-backup.squashfs',
  /** Older generations: upperfs-gen-<n>.squashfs, n grows with each one kept. */
  generationPrefix: 'upperfs-gen-',
  stateSuffix: '.squashfs',
  /**
   * Every link of every checkpoint chain, the base too, by its seal id:
   * checkpoints/<id>.squashfs (checkpointLink). A state name holding a delta
   * is the tip of a chain whose seal names the links before it
   * (docs/state-format.md "Checkpoint chains").
   */
  checkpoints: 'checkpoints',
  /** The image being written by a save; never booted, removed when left over. */
  temp: 'upperfs.squashfs.tmp',
  /** A second name for the state about to become the backup, renamed over it. */
  backupNext: 'upperfs-backup.squashfs.next',
  /** The save lock: a directory holding its owner's token (src/lib/lock.ts). */
  saveLock: '.cairn-save.lock',
  /** Where cairn before the shared lock kept the save lock's owner; the next save removes it. */
  saveLockOwner: '.cairn-save.owner',
  /**
   * Written when the shutdown save fails (when, and why), removed by the next
   * one that succeeds: every login and `cairn status` show it until then.
   */
  saveFailed: '.cairn-save-failed',
  /**
   * States a boot fell back past, held until the user acts: no save drops or
   * prunes them (src/state/held.ts). The login and `cairn status` say so.
   */
  held: '.cairn-held',
  userDir: 'user',
  swapfile: 'swapfile',
} as const;

export function modulesImage(kernelVersion: string): string {
  return `modules-${kernelVersion}.squashfs`;
}

/** The kernel release a modules image is for, or undefined for any other name. */
export function modulesImageRelease(name: string): string | undefined {
  return /^modules-(.+)\.squashfs$/.exec(name)?.[1];
}

/** A chain link's name on the data partition, by its seal id. */
export function checkpointLink(id: string): string {
  return `${DATA.checkpoints}/${id}${DATA.stateSuffix}`;
}

export function generationName(n: number): string {
  return `${DATA.generationPrefix}${n}${DATA.stateSuffix}`;
}

/** The number of an older generation's file, or undefined for any other name. */
export function generationNumber(name: string): number | undefined {
  const m = /^upperfs-gen-([1-9][0-9]*)\.squashfs$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/**
 * Who may read the data partition: its root is open to root only (others may
 * pass through to user/, which stays the user's), and every saved state is
 * root's alone (a state holds /etc/shadow, ssh keys, every user's files).
 * The image builder, every save and every boot (the initramfs, so older
 * sticks are put right) set these.
 */
export const MODES = {
  dataRoot: 0o711,
  state: 0o600,
} as const;

/**
 * `cairn backup` and `cairn restore` (docs/backup.md): the backup file's
 * magic lines and format, and the names a restore works under on the data
 * partition, each a step of its crash-safe sequence.
 */
export const BACKUP = {
  magic: 'cairn-backup',
  endMagic: 'cairn-backup-end',
  /** The format this cairn writes and the newest it reads. */
  format: 1,
  /** Beside FILE while a backup is written; renamed to FILE once read back and verified. */
  partialSuffix: '.cairn-partial',
  /** user/ as the backup holds it, unpacked here first; a leftover is removed. */
  userPartial: '.cairn-restore-user.partial',
  /** The restored user/, complete, waiting to be swapped in. */
  userReady: '.cairn-restore-user.ready',
  /** user/ as it was before a restore, removed once the new one is in place. */
  userOld: '.cairn-restore-user.old',
  /** The user folder's image copied out of the backup before unpacking. */
  userImage: '.cairn-restore-user.squashfs',
} as const;

/** Where things are on the ESP. */
export const ESP_PATHS = {
  bootState: 'grub/cairn-boot.json',
  menu: 'grub/grub.cfg',
  /** GRUB's environment block: the boot counters (src/boot/tries.ts). */
  grubEnv: 'grub/grubenv',
  kernel: (release: string) => `vmlinuz-${release}`,
  initrd: (release: string) => `initramfs-${release}`,
} as const;

/** Labels the image builder gives the partitions and the initramfs looks for. */
export const LABELS = {
  data: 'cairn-data',
  esp: 'CAIRN-ESP',
} as const;

/** Paths in the running system, as the initramfs leaves them. */
export const RUNTIME = {
  runDir: '/run/cairn',
  bootRecord: '/run/cairn/boot',
  /** The RAM upper layer's mount (zram or tmpfs). */
  upperMount: '/run/cairn/rw',
  /** overlayfs upperdir and workdir inside it. */
  upperDir: '/run/cairn/rw/upper',
  workDir: '/run/cairn/rw/work',
  /** The read-only base image. */
  lowerDir: '/run/cairn/lower',
  /** The data partition. */
  dataDir: '/persist',
  config: '/etc/cairn/cairn.conf',
} as const;

/**
 * The seal at the end of every state image: a text block of this many bytes
 * after the squashfs image (squashfs ignores what follows its own end).
 */
export const SEAL = {
  size: 4096,
  magic: 'cairn-state 1',
  /**
   * The magic line of a checkpoint delta's seal (docs/state-format.md): not
   * the state's, so that an initramfs that knows no deltas finds no seal at
   * all and never unpacks a delta as if it were a whole state.
   */
  deltaMagic: 'cairn-delta 1',
  /**
   * What `cksum` (POSIX CRC) prints for the whole file of a state sealed with
   * a `cksum_fix` field, which is chosen to make it so (docs/state-format.md).
   */
  cksum: 0,
} as const;

/** Inside every state image, beside the saved upper layer's own files. */
export const STATE = {
  /**
   * The upper layer's POSIX ACLs, which squashfs cannot store, at the image's
   * root (src/save/acl.ts). The boot puts them back and removes the file
   * (initramfs/lib/acl.sh); a file of this name at the root of the upper
   * layer is never saved.
   */
  aclDump: '.cairn-acls',
  /**
   * Sparse files too large to squash as they are (src/save/sparse.ts): a
   * directory at the image's root holding each one's data without its holes,
   * a map of where that data goes, and their xattrs. The boot rebuilds the
   * files and removes the directory (initramfs/lib/sparse.sh).
   */
  sparseDir: '.cairn-sparse',
} as const;
