import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import type { Stats } from 'node:fs';
import type { ExcludeMatcher } from './exclude.js';

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
}

/**
 * Every entry below `root` (the root itself as ""), with what a save must
 * keep, in depth-first order with names sorted bytewise: the order in which
 * mksquashfs lays out files, so reading in it keeps the image's fragment
 * cache warm. Synchronous on purpose: the trees live in RAM, and a sync lstat
 * costs a tenth of a round trip through libuv's thread pool.
 */
export function walkTree(root: string, exclude?: ExcludeMatcher): Walk {
  const entries = new Map<string, Entry>();
  const visit = (rel: string): void => {
    const path = toFsPath(root, rel);
    const st = lstatSync(path);
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
    if (entry.type === 'symlink') entry.target = readlinkSync(path, { encoding: 'buffer' }).toString('latin1');
    entries.set(rel, entry);
    if (entry.type !== 'dir') return;
    const names = readdirSync(path, { encoding: 'buffer' })
      .map((b) => b.toString('latin1'))
      .sort();
    for (const name of names) {
      const child = rel ? `${rel}/${name}` : name;
      // An excluded path is left out with all it holds.
      if (!exclude?.(child)) visit(child);
    }
  };
  visit('');
  return { entries };
}
