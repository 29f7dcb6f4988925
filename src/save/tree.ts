import { lstat, readdir, readlink } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import type { ExcludeMatcher } from './exclude.js';
import { limiter } from '../lib/limit.js';

/**
 * File names are bytes on Linux, not always UTF-8. Paths are carried as
 * latin1 strings (one char per byte) and turned back into bytes for every
 * system call, so no name is mangled on the way.
 */
export const toFsPath = (root: string, rel: string): Buffer =>
  Buffer.concat([Buffer.from(root), Buffer.from(rel ? `/${rel}` : '', 'latin1')]);
export const displayPath = (rel: string): string => `/${Buffer.from(rel, 'latin1').toString('utf8')}`;
/** A pattern or user-given path, as the latin1 form used for paths here. */
export const asBytePath = (utf8: string): string => Buffer.from(utf8, 'utf8').toString('latin1');

export type EntryType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';

export interface Entry {
  type: EntryType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Bytes actually allocated: a sparse file's holes take none. */
  allocated: number;
  rdev: number;
  ino: number;
  nlink: number;
  ctimeMs: number;
  target?: string;
}

function typeOf(st: Stats): EntryType {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  return 'socket';
}

export interface Walk {
  entries: Map<string, Entry>;
  /** Paths left out by the exclude list (each prunes what is below it). */
  excluded: string[];
}

/**
 * Every entry below `root` (the root itself as ""), with what a save must
 * keep. System calls run a few at a time.
 */
export async function walkTree(root: string, exclude?: ExcludeMatcher): Promise<Walk> {
  const entries = new Map<string, Entry>();
  const excluded: string[] = [];
  const io = limiter(16);
  const visit = async (rel: string): Promise<void> => {
    const path = toFsPath(root, rel);
    const st = await io(() => lstat(path));
    const entry: Entry = {
      type: typeOf(st),
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      size: st.isFile() ? st.size : 0,
      allocated: st.blocks * 512,
      rdev: st.rdev,
      ino: st.ino,
      nlink: st.nlink,
      ctimeMs: st.ctimeMs,
    };
    if (entry.type === 'symlink') {
      entry.target = (await io(() => readlink(path, { encoding: 'buffer' }))).toString('latin1');
    }
    entries.set(rel, entry);
    if (entry.type !== 'dir') return;
    const names = await io(() => readdir(path, { encoding: 'buffer' }));
    const children: Promise<void>[] = [];
    for (const nameBuf of names) {
      const child = rel ? `${rel}/${nameBuf.toString('latin1')}` : nameBuf.toString('latin1');
      if (exclude?.(child)) excluded.push(child);
      else children.push(visit(child));
    }
    await Promise.all(children);
  };
  await visit('');
  return { entries, excluded };
}
