import { link, lstat, open, rename, rm, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * Durable file operations. A rename or link is only on the stick once the
 * directory holding it is fsynced; every operation here waits for that.
 */

export async function fsyncFile(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Atomically replaces `to` with `from` (same directory) and makes it last. */
export async function renameDurably(from: string, to: string): Promise<void> {
  await rename(from, to);
  // rename(2) does nothing when both names are links to one file (as after a
  // crash mid-rotation); the source name is then a spare link to drop.
  const [a, b] = await Promise.all([lstat(from).catch(() => undefined), lstat(to)]);
  if (a && a.ino === b.ino && a.dev === b.dev) await unlink(from);
  await fsyncDir(dirname(to));
}

/** A second name for the same file, made durable; a leftover `to` is replaced. */
export async function linkDurably(from: string, to: string): Promise<void> {
  await rm(to, { force: true });
  await link(from, to);
  await fsyncDir(dirname(to));
}

export async function unlinkDurably(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  await fsyncDir(dirname(path));
}

/** Appends bytes to a file and fsyncs it. */
export async function appendDurably(path: string, data: Buffer): Promise<void> {
  const fh = await open(path, 'a');
  try {
    await fh.write(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Replaces a whole file so that a crash leaves the old content or the new,
 * never a mix: write `<path>.tmp`, fsync it, rename it over `path`, fsync the
 * directory. A leftover temp file from an earlier crash is overwritten.
 */
export async function writeFileDurably(path: string, data: string | Buffer, mode = 0o644): Promise<void> {
  const temp = `${path}.tmp`;
  const fh = await open(temp, 'w', mode);
  try {
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await renameDurably(temp, path);
  } catch (e) {
    await rm(temp, { force: true }).catch(() => undefined);
    throw e;
  }
}
