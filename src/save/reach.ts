import { closeSync, constants, fstatSync, openSync } from 'node:fs';

/** The longest path the kernel takes, with its terminating NUL (PATH_MAX). */
export const PATH_MAX = 4096;

/**
 * File names are bytes on Linux, not always UTF-8. Paths are carried as
 * latin1 strings (one char per byte) and turned back into bytes for every
 * system call, so no name is mangled on the way.
 */
export const toFsPath = (root: string, rel: string): Buffer =>
  Buffer.concat([Buffer.from(root), Buffer.from(rel ? `/${rel}` : '', 'latin1')]);

/** Only bytes below 0x80: the latin1 form and the UTF-8 one are the same bytes. */
const ASCII = /^[\x00-\x7f]*$/;

/** Directories kept open at once: a depth-first walk needs the few above it. */
const ANCHORS = 16;

/**
 * Reaches every entry below `root`, however deep. A path of PATH_MAX bytes
 * or more fails with ENAMETOOLONG, and Node has no openat(2); but a
 * directory held open is itself a short path, /proc/self/fd/<fd>. So an entry
 * whose full path is too long is reached as /proc/self/fd/<fd of its
 * parent>/<name>, the parent opened the same way one level up. The last few
 * directories stay open, most recently used first, which a walk in
 * depth-first order (and reads in that order) hit almost always.
 *
 * This is the one place that knows the trick: every lstat, readdir, readlink
 * and open of a tree entry goes through `path`.
 */
export class TreeReach {
  private readonly anchors = new Map<string, number>();
  private readonly asciiRoot: boolean;

  constructor(readonly root: string) {
    this.asciiRoot = ASCII.test(root);
  }

  /**
   * A path for `rel` (latin1 form) that the kernel accepts. Use it before the
   * next call: the directory it goes through may be closed to open another.
   */
  path(rel: string): string | Buffer {
    // Most paths are ASCII, and a walk asks for one per entry: as a string,
    // it goes to the kernel without three Buffers built for it first.
    if (this.asciiRoot && ASCII.test(rel)) {
      const full = rel ? `${this.root}/${rel}` : this.root;
      if (full.length < PATH_MAX) return full;
    } else {
      const full = toFsPath(this.root, rel);
      if (full.length < PATH_MAX) return full;
    }
    const slash = rel.lastIndexOf('/');
    const fd = this.anchor(slash < 0 ? '' : rel.slice(0, slash));
    return Buffer.concat([Buffer.from(`/proc/self/fd/${fd}/`), Buffer.from(rel.slice(slash + 1), 'latin1')]);
  }

  /** Closes the directories held open; the reach can be used again afterwards. */
  close(): void {
    for (const fd of this.anchors.values()) closeSync(fd);
    this.anchors.clear();
  }

  private anchor(dir: string): number {
    const held = this.anchors.get(dir);
    if (held !== undefined) {
      this.anchors.delete(dir);
      this.anchors.set(dir, held);
      return held;
    }
    // O_NOFOLLOW: a directory swapped for a symlink meanwhile must not lead
    // the walk out of the tree.
    const fd = openSync(this.path(dir), constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
    this.anchors.set(dir, fd);
    if (this.anchors.size > ANCHORS) {
      // The oldest, never the one just opened nor its parent, used a moment ago.
      const [oldest, oldFd] = this.anchors.entries().next().value as [string, number];
      this.anchors.delete(oldest);
      closeSync(oldFd);
    }
    return fd;
  }
}

/** `fn` with a reach of `root`, whose directories are closed afterwards. */
export function withReach<T>(root: string, fn: (reach: TreeReach) => T): T {
  const reach = new TreeReach(root);
  try {
    return fn(reach);
  } finally {
    reach.close();
  }
}

/** Opens a file to read without following its name, nor waiting, were it swapped for a FIFO. */
export const READ_ONLY_FILE = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/**
 * The regular file at `rel` opened for reading; undefined when it, or a
 * directory above it, is gone, or it is no longer a regular file (the user
 * swapped it for something else since it was walked). A FIFO opened with a
 * plain O_RDONLY would wait for a writer for ever.
 */
export function openRegular(reach: TreeReach, rel: string): number | undefined {
  let fd: number;
  try {
    fd = openSync(reach.path(rel), READ_ONLY_FILE);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP' || code === 'ENXIO') return undefined;
    throw e;
  }
  if (fstatSync(fd).isFile()) return fd;
  closeSync(fd);
  return undefined;
}
