import { open, rename, link, unlink, rm } from 'node:fs/promises';
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
