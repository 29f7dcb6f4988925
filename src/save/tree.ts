import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { formatBytes } from '../lib/format.js';
import { DATA, RUNTIME, STATE } from '../names.js';
import type { ExcludeMatcher } from './exclude.js';
import { PATH_MAX, TreeReach } from './reach.js';
import { canPackSparse } from './sparse.js';
import { canExclude } from './wildcards.js';

export const displayPath = (rel: string): string => `/${Buffer.from(rel, 'latin1').toString('utf8')}`;
/** displayPath for a message: a path thousands of bytes long is shortened in its middle, its start saying where it is. */
export function shownPath(rel: string): string {
  const p = displayPath(rel);
  return p.length > 240 ? `${p.slice(0, 120)}...${p.slice(-100)}` : p;
}
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
  mtimeMs: number;
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

/** An entry a save leaves out with all it holds, and why, in words for the user. */
export interface LeftOut {
  rel: string;
  reason: string;
}

/** A sparse file a save keeps without its holes (sparse.ts): its paths (hard links) and what it is. */
export interface PackedFile {
  rels: string[];
  entry: Entry;
}

export interface Walk {
  /** What a state holds as it is. */
  entries: Map<string, Entry>;
  /** Only when walked for a save: what a saved state cannot hold. */
  leftOut: LeftOut[];
  /** Only when walked for a save: the sparse files it holds without their holes, not among `entries`. */
  packed: PackedFile[];
}

export interface WalkOptions {
  /**
   * The tree is an upper layer to save: leave out, and list, what a saved
   * state cannot hold. Both the squash and the verification walk this way,
   * so they agree on it.
   */
  forSave?: boolean;
}

/**
 * The longest relative path a saved state keeps below `root`. mksquashfs
 * reaches each file as `root/rel`, and at boot unsquashfs creates it as
 * `/run/cairn/rw/upper/rel`; both fail past PATH_MAX (mksquashfs skips the
 * file, unsquashfs gives up on the whole state), so a state never holds a
 * path either of them could not.
 */
export function longestSavedPath(root: string): number {
  return PATH_MAX - 2 - Math.max(Buffer.byteLength(root), Buffer.byteLength(RUNTIME.upperDir));
}

/** What lstat tells of PATH (never followed), as a walk keeps it. */
export function entryAt(path: string | Buffer): Entry {
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
    mtimeMs: st.mtimeMs,
  };
  if (entry.type === 'symlink') entry.target = readlinkSync(path, 'latin1');
  return entry;
}

/**
 * Every entry below `root` (the root itself as ""), with what a save must
 * keep, in depth-first order with names sorted bytewise: the order in which
 * mksquashfs lays out files, so reading in it keeps the image's fragment
 * cache warm. Synchronous on purpose: the trees live in RAM, and a sync lstat
 * costs a tenth of a round trip through libuv's thread pool. Entries deeper
 * than PATH_MAX are reached all the same (reach.ts).
 */
export function walkTree(root: string, exclude?: ExcludeMatcher, options: WalkOptions = {}): Walk {
  const walking = walkInSteps(root, exclude, options);
  for (let step = walking.next(); ; step = walking.next()) if (step.done) return step.value;
}

/**
 * walkTree, letting other work of this thread run between its steps: the
 * verification feeds its comparing threads while it walks the image.
 */
export async function walkTreeAside(root: string, exclude?: ExcludeMatcher, options: WalkOptions = {}): Promise<Walk> {
  const walking = walkInSteps(root, exclude, options);
  for (let step = walking.next(); ; step = walking.next()) {
    if (step.done) return step.value;
    await new Promise(setImmediate);
  }
}

/** Entries walked between two steps of walkInSteps: a few milliseconds. */
const STEP_ENTRIES = 256;

/** walkTree's walk, pausing (yielding) every STEP_ENTRIES entries. */
function* walkInSteps(root: string, exclude: ExcludeMatcher | undefined, options: WalkOptions): Generator<void, Walk, void> {
  const entries = new Map<string, Entry>();
  const leftOut: LeftOut[] = [];
  const packed: PackedFile[] = [];
  const longest = options.forSave ? longestSavedPath(root) : Infinity;
  const reach = new TreeReach(root);
  // Depth first, names in order: what is to be visited next is on top,
  // each directory's entries pushed last name first. One loop, not a
  // generator per entry (a yield* per level): with the string paths of
  // reach.ts, a walk of 20 000 entries went from 270 ms to 150.
  const pending: string[] = [''];
  try {
    for (let rel = pending.pop(); rel !== undefined; rel = pending.pop()) {
      const path = reach.path(rel);
      const entry = entryAt(path);
      entries.set(rel, entry);
      if (entries.size % STEP_ENTRIES === 0) yield;
      if (entry.type !== 'dir') continue;
      const names = readdirSync(reach.path(rel), 'latin1').sort();
      for (let i = names.length - 1; i >= 0; i--) {
        const name = names[i]!;
        const child = rel ? `${rel}/${name}` : name;
        // An excluded path is left out with all it holds; so is a user's
        // entry at a name of the save's own records, which only root can make.
        if (exclude?.(child)) continue;
        if (options.forSave && !rel && OWN_NAMES.has(name)) continue;
        if (child.length > longest) {
          leftOut.push({ rel: child, reason: `its path is ${child.length} bytes long, more than the ${longest} a saved state can hold (PATH_MAX)` });
        } else {
          pending.push(child);
        }
      }
    }
  } finally {
    reach.close();
  }
  // Listed as each directory was read; told in the walk's order.
  leftOut.sort((a, b) => walkOrder(a.rel, b.rel));
  if (options.forSave) packHoles(entries, leftOut, packed);
  return { entries, leftOut, packed };
}

/** Negative when a walk meets A before B: component by component, bytewise. */
function walkOrder(a: string, b: string): number {
  const x = a.split('/');
  const y = b.split('/');
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i]! < y[i]! ? -1 : 1;
  return x.length - y.length;
}

/** The save's own records at the root of a state. */
const OWN_NAMES = new Set<string>([STATE.aclDump, STATE.sparseDir]);

/** Whether REL is one of the save's own records in a state (acl.ts, sparse.ts) or below one: never a user's entry. */
export const isOwnRecord = (rel: string): boolean => rel === STATE.aclDump || rel === STATE.sparseDir || rel.startsWith(`${STATE.sparseDir}/`);

/** WALK without the save's own records, which a walk of an image or a booted upper layer meets. */
export function dropOwnRecords(walk: Walk): Walk {
  for (const rel of [...walk.entries.keys()]) if (isOwnRecord(rel)) walk.entries.delete(rel);
  return walk;
}

/**
 * The holes a save reads at most. mksquashfs finds a sparse file's holes by
 * reading them, and the verification reads them back through the image:
 * on the build machine (2 cores) 0.5 to 0.8 s per GiB when idle, ten times
 * that under load. `truncate -s 1T` alone would keep a save busy from ten
 * minutes to hours, past the shutdown's bound (cairn-save's save_timeout,
 * 900 s); 32 GiB of holes cost half a minute, five under load.
 */
export const HOLE_BUDGET = 32 * 2 ** 30;

/**
 * Takes the sparse files with the largest holes out of what mksquashfs reads
 * until the holes left fit HOLE_BUDGET: a VM disk image of a few GiB is
 * squashed as it is, a 1 TiB file of a few MiB is kept without its holes
 * (sparse.ts), and where that cannot be (no perl) it is left out and named.
 * Hard links to such a file go with it, since mksquashfs would read it
 * through them.
 */
function packHoles(entries: Map<string, Entry>, leftOut: LeftOut[], packed: PackedFile[]): void {
  const inodes = new Map<number, PackedFile & { holes: number }>();
  let total = 0;
  for (const [rel, e] of entries) {
    const holes = e.size - e.allocated;
    if (e.type !== 'file' || holes <= 0) continue;
    const inode = inodes.get(e.ino);
    if (inode) {
      inode.rels.push(rel);
      continue;
    }
    inodes.set(e.ino, { holes, entry: e, rels: [rel] });
    total += holes;
  }
  const largestFirst = [...inodes.values()].sort((a, b) => b.holes - a.holes);
  const packable = canPackSparse();
  for (const inode of largestFirst) {
    if (total <= HOLE_BUDGET) break;
    // mksquashfs is told to leave such a file out by its names: one no
    // exclude line can hold (wildcards.ts) is squashed as it is, holes read.
    if (!inode.rels.every(canExclude)) continue;
    total -= inode.holes;
    for (const rel of inode.rels) entries.delete(rel);
    if (packable) {
      packed.push({ rels: inode.rels, entry: inode.entry });
      continue;
    }
    const { size, allocated } = inode.entry;
    const reason =
      `a sparse file of ${formatBytes(size)} holding ${formatBytes(allocated)} of data: squashing reads ` +
      `its ${formatBytes(inode.holes)} of holes byte by byte, more than a save can read in time ` +
      `(${formatBytes(HOLE_BUDGET)} of holes at most), and perl, which finds its data without reading them, is missing ` +
      `(apk add perl); keep it in ${RUNTIME.dataDir}/${DATA.userDir}, which is not squashed`;
    for (const rel of inode.rels) leftOut.push({ rel, reason });
  }
}

/** At most this many left-out paths are named; the rest are counted. */
const NAMED_LEFT_OUT = 20;

/** What was left out, a sentence each, for the console and the report. */
export function describeLeftOut(leftOut: readonly LeftOut[]): string[] {
  const lines = leftOut.slice(0, NAMED_LEFT_OUT).map((l) => `not saved: ${shownPath(l.rel)}: ${l.reason}`);
  if (leftOut.length > NAMED_LEFT_OUT) lines.push(`not saved: ${leftOut.length - NAMED_LEFT_OUT} more paths, for the same reasons`);
  return lines;
}
