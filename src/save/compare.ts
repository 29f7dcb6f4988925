import { closeSync, lstatSync, openSync } from 'node:fs';
import { log } from '../lib/log.js';
import { compareImageAcls } from './acl.js';
import { ContentLanes, type FilePair } from './lanes.js';
import { openRegular, READ_ONLY_FILE, TreeReach, withReach } from './reach.js';
import { compareSparse } from './sparse.js';
import { displayPath, dropOwnRecords, walkTreeAside, type Entry, type Walk } from './tree.js';
import { readXattrs, readXattrsOf } from './xattrs.js';

export interface Difference {
  path: string;
  /** The path as walkTree keys it (latin1 bytes, "" for the root). */
  rel: string;
  what: string;
  expected: string;
  actual: string;
  /** The path changed after the save began: a retry will likely succeed. */
  changedDuringSave: boolean;
}

export interface CompareResult {
  differences: Difference[];
  /** Entries compared, the root included. */
  entries: number;
  bytesCompared: number;
  /** Files whose contents were read on both sides and compared. */
  filesCompared: number;
}

export interface CompareOptions {
  /** The upper layer as walked with the exclude list applied. */
  upper: Walk;
  upperRoot: string;
  imageRoot: string;
  /**
   * Other mounts of the same image: file contents are read from all of them
   * side by side, one worker thread each (compareContents).
   */
  moreImageRoots?: string[];
  /** When the save began (ms since the epoch): later changes are reported as such. */
  since: number;
  /** Stop comparing contents once this many differences are known. */
  maxDifferences?: number;
  /**
   * Only files this returns true for have their contents compared (default:
   * all). `cairn diff` reads only what changed since its baseline.
   */
  compareContentsOf?: (rel: string, upper: Entry) => boolean;
  /**
   * The upper walk lists only part of the tree (a checkpoint delta's
   * entries): the xattrs and ACLs of those are read, not the whole tree's.
   */
  scoped?: boolean;
  onProgress?: (bytesDone: number) => void;
}

const octal = (n: number) => `0${n.toString(8)}`;
const devName = (rdev: number) => `${Math.floor(rdev / 256) & 0xfff}:${(rdev & 0xff) | ((rdev >> 12) & 0xfff00)}`;

/**
 * Compares a mounted image with the upper layer it was made from: every path,
 * type, mode, owner, size, link target, device number, hard-link group,
 * xattr, POSIX ACL, and the contents of every regular file.
 */
export async function compareTrees(options: CompareOptions): Promise<CompareResult> {
  const { upper, upperRoot, imageRoot, since } = options;
  const liveSince = since - COARSE_CLOCK_MS;
  const max = options.maxDifferences ?? 50;
  const t0 = Date.now();
  const differences: Difference[] = [];
  const differ: Differ = (rel, what, expected, actual, changed) => {
    const u = upper.entries.get(rel);
    // A file written after the walk (appended to while its contents were
    // compared, say) has the walk's old ctime: its ctime now tells.
    const live = changed ?? ((u?.ctimeMs ?? since) >= liveSince || changedSinceWalk(upperRoot, rel, liveSince));
    differences.push({ path: displayPath(rel), rel, what, expected, actual, changedDuringSave: live });
  };
  // The contents, the longest part, go first, in their threads; the image is
  // walked and its metadata compared here meanwhile.
  let failed = false;
  const contents = compareContents(options, differ, max, () => failed);
  // Awaited below; until then its failure must not count as unhandled.
  contents.catch(() => undefined);
  let image: Walk;
  let t1 = t0;
  try {
    image = await walkTreeAside(imageRoot);
    // The records are the save's own, compared as ACLs and sparse files below
    // (acl.ts, sparse.ts); the upper layer's walk for a save leaves out
    // whatever of the user's has their names.
    dropOwnRecords(image);
    t1 = Date.now();
    for (const [rel, u] of upper.entries) {
      const i = image.entries.get(rel);
      if (!i) differ(rel, 'presence', 'present', 'missing from the image');
      else compareEntry(rel, u, i, differ);
    }
    for (const rel of image.entries.keys()) {
      if (!upper.entries.has(rel)) differ(rel, 'presence', 'absent', 'present in the image only');
    }
    compareLinkGroups(upper.entries, image.entries, differ);
    // Both wait on getfattr walking the trees: side by side.
    const [, acls] = await Promise.all([
      compareXattrs(upperRoot, imageRoot, upper.entries, differ, options.scoped ?? false),
      compareImageAcls(upperRoot, imageRoot, upper, image, options.scoped ?? false),
    ]);
    for (const d of acls) differ(d.rel, 'ACL', d.expected, d.actual);
  } catch (e) {
    // Its threads read the mounts the caller unmounts next.
    failed = true;
    await contents.catch(() => undefined);
    throw e;
  }
  const t2 = Date.now();
  const compared = await contents;
  let bytesCompared = compared.bytes;
  const progress = (n: number) => options.onProgress?.((bytesCompared += n));
  for (const d of await compareSparse(upperRoot, imageRoot, upper, progress)) differ(d.rel, d.what, d.expected, d.actual);
  log.debug({ walkMs: t1 - t0, metadataMs: t2 - t1, contentsMoreMs: Date.now() - t2, bytesCompared }, 'compared');
  const packedPaths = upper.packed.reduce((n, p) => n + p.rels.length, 0);
  return { differences, entries: image.entries.size + packedPaths, bytesCompared, filesCompared: compared.files };
}

/** `changed`: known to have changed after the save began, whatever its ctime says. */
export type Differ = (rel: string, what: string, expected: string, actual: string, changed?: boolean) => void;

export function compareEntry(rel: string, u: Entry, i: Entry, differ: Differ): void {
  if (u.type !== i.type) return differ(rel, 'type', u.type, i.type);
  if (u.mode !== i.mode) differ(rel, 'mode', octal(u.mode), octal(i.mode));
  if (u.uid !== i.uid || u.gid !== i.gid) differ(rel, 'owner', `${u.uid}:${u.gid}`, `${i.uid}:${i.gid}`);
  if (u.type === 'file' && u.size !== i.size) differ(rel, 'size', String(u.size), String(i.size));
  if (u.type === 'symlink' && u.target !== i.target) differ(rel, 'link target', u.target ?? '', i.target ?? '');
  if ((u.type === 'char' || u.type === 'block') && u.rdev !== i.rdev) {
    differ(rel, 'device number', devName(u.rdev), devName(i.rdev));
  }
}

/** Paths that share an inode on one side must share one on the other. */
function compareLinkGroups(upper: Map<string, Entry>, image: Map<string, Entry>, differ: Differ): void {
  // Each linked path's partner: the first path seen with the same inode.
  const partners = (entries: Map<string, Entry>) => {
    const first = new Map<number, string>();
    const partner = new Map<string, string>();
    for (const [rel, e] of entries) {
      if (e.type === 'dir' || e.nlink < 2) continue;
      if (!first.has(e.ino)) first.set(e.ino, rel);
      partner.set(rel, first.get(e.ino)!);
    }
    return partner;
  };
  const sameInode = (entries: Map<string, Entry>, x: string, y: string) =>
    entries.get(x) !== undefined && entries.get(x)?.ino === entries.get(y)?.ino;
  const inUpper = partners(upper);
  const inImage = partners(image);
  for (const [rel, partner] of inUpper) {
    if (image.has(rel) && image.has(partner) && !sameInode(image, rel, partner)) {
      differ(rel, 'hard links', `linked with ${displayPath(partner)}`, 'not linked in the image');
    }
  }
  for (const [rel, partner] of inImage) {
    if (upper.has(rel) && upper.has(partner) && !sameInode(upper, rel, partner)) {
      differ(rel, 'hard links', 'not linked', `linked with ${displayPath(partner)} in the image`);
    }
  }
}

async function compareXattrs(upperRoot: string, imageRoot: string, upper: Map<string, Entry>, differ: Differ, scoped: boolean): Promise<void> {
  const [u, i] = await Promise.all([scoped ? readXattrsOf(upperRoot, [...upper.keys()]) : readXattrs(upperRoot), readXattrs(imageRoot)]);
  const show = (m?: Map<string, string>) => (m && m.size ? [...m].map(([k, v]) => `${k}=${v}`).sort().join(' ') : '(none)');
  for (const rel of new Set([...u.keys(), ...i.keys()])) {
    if (!upper.has(rel)) continue; // excluded from the save
    const a = show(u.get(rel));
    const b = show(i.get(rel));
    if (a === b) continue;
    if (isGone(upperRoot, rel)) differ(rel, 'presence', 'removed while the save compared it', 'present', true);
    else differ(rel, 'xattrs', a, b);
  }
}

/** Whether an upper-layer entry the walk found is gone now. */
function isGone(upperRoot: string, rel: string): boolean {
  const reach = new TreeReach(upperRoot);
  try {
    lstatSync(reach.path(rel));
    return false;
  } catch (e) {
    if (isGoneError(e)) return true;
    throw e;
  } finally {
    reach.close();
  }
}

/**
 * Compares file contents in image order, in one worker thread per mount of
 * the image (lanes.ts): the kernel may decompress a mount on one CPU at a
 * time, and two mounts of the same device are two decompressors. Files are
 * opened here, in batches of neighbours (small files share fragment blocks,
 * which each mount would decompress again), and each batch goes to the lane
 * with the fewest bytes still to compare.
 */
async function compareContents(options: CompareOptions, differ: Differ, max: number, stopped: () => boolean): Promise<{ bytes: number; files: number }> {
  const { upper, upperRoot } = options;
  const roots = [options.imageRoot, ...(options.moreImageRoots ?? [])];
  const seenInodes = new Set<number>();
  const upperReach = new TreeReach(upperRoot);
  const imageReaches = roots.map((r) => new TreeReach(r));
  const lanes = new ContentLanes(roots.length);
  const emptyBatch = () => ({ upperFds: [] as number[], rels: [] as string[], sizes: [] as number[], bytes: 0 });
  let batch = emptyBatch();
  const owed = roots.map(() => 0);
  const inFlight = new Set<Promise<void>>();
  let done = 0;
  let files = 0;
  let failures = 0;
  const send = () => {
    const sending = batch;
    batch = emptyBatch();
    const lane = owed.indexOf(Math.min(...owed));
    const pairs: FilePair[] = [];
    const rels: string[] = [];
    const sizes: number[] = [];
    let k = 0;
    try {
      for (; k < sending.rels.length; k++) {
        const upperFd = sending.upperFds[k]!;
        const imageFd = openImageFile(imageReaches[lane]!, sending.rels[k]!, sending.sizes[k]!);
        // Not the same-sized file in the image: the metadata comparison says what it is.
        if (imageFd === undefined) closeSync(upperFd);
        else {
          pairs.push({ upperFd, imageFd });
          rels.push(sending.rels[k]!);
          sizes.push(sending.sizes[k]!);
        }
      }
    } catch (e) {
      for (const fd of sending.upperFds.slice(k)) closeSync(fd);
      for (const p of pairs) {
        closeSync(p.upperFd);
        closeSync(p.imageFd);
      }
      throw e;
    }
    owed[lane]! += sending.bytes;
    const closeAll = () => {
      for (const p of pairs) {
        closeSync(p.upperFd);
        closeSync(p.imageFd);
      }
    };
    const sent = lanes.compare(lane, pairs).finally(closeAll).then((offsets) => {
      owed[lane]! -= sending.bytes;
      offsets.forEach((offset, k) => {
        done += sizes[k]!;
        files++;
        if (offset !== null && failures < max) {
          failures++;
          differ(rels[k]!, 'contents', 'other bytes', `different from byte ${offset} on`);
        }
      });
      options.onProgress?.(done);
    });
    const tracked: Promise<void> = sent.finally(() => inFlight.delete(tracked));
    inFlight.add(tracked);
  };
  try {
    for (const [rel, u] of upper.entries) {
      if (failures >= max || stopped()) break;
      if (u.type !== 'file' || u.size === 0) continue;
      if (options.compareContentsOf && !options.compareContentsOf(rel, u)) continue;
      if (u.nlink > 1) {
        if (seenInodes.has(u.ino)) continue;
        seenInodes.add(u.ino);
      }
      const upperFd = openRegular(upperReach, rel);
      if (upperFd === undefined) {
        // Walked a moment ago, gone now: the user removed or replaced it while the save ran.
        differ(rel, 'presence', 'removed or replaced while the save compared it', 'present', true);
        failures++;
        continue;
      }
      batch.upperFds.push(upperFd);
      batch.rels.push(rel);
      batch.sizes.push(u.size);
      batch.bytes += u.size;
      if (batch.rels.length >= BATCH_FILES || batch.bytes >= BATCH_BYTES) send();
      // A couple of batches ahead per lane keep both busy with few files open.
      while (inFlight.size >= 2 * roots.length) await Promise.race(inFlight);
    }
    if (batch.rels.length) send();
    await Promise.all(inFlight);
  } finally {
    // What no lane was sent is still open here.
    for (const fd of batch.upperFds) closeSync(fd);
    await Promise.allSettled(inFlight);
    await lanes.close();
    upperReach.close();
    for (const r of imageReaches) r.close();
  }
  return { bytes: done, files };
}

const BATCH_FILES = 64;
const BATCH_BYTES = 8 << 20;

/**
 * The image's file at REL opened for reading when it is a regular file of
 * SIZE bytes, as the upper layer's is; undefined when it is missing or is
 * something else, which the metadata comparison reports. Only a regular
 * file is opened: opening a FIFO would wait for a writer, a device could
 * act on it.
 */
function openImageFile(reach: TreeReach, rel: string, size: number): number | undefined {
  const path = reach.path(rel);
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (!st?.isFile() || st.size !== size) return undefined;
  return openSync(path, READ_ONLY_FILE);
}

/**
 * The kernel stamps a ctime from a clock it reads once a tick, up to 10 ms
 * behind the one Date.now() reads: a change made just after a save began
 * can carry a ctime a little before it. One counted as made during the
 * save for that costs a try again at most (again.ts).
 */
const COARSE_CLOCK_MS = 20;

/** Whether the upper layer's entry at REL changed at or after SINCE, as it is now; gone counts as changed. */
function changedSinceWalk(upperRoot: string, rel: string, since: number): boolean {
  return withReach(upperRoot, (reach) => {
    try {
      return lstatSync(reach.path(rel)).ctimeMs >= since;
    } catch (e) {
      if (isGoneError(e)) return true;
      throw e;
    }
  });
}

/** The error of a path that, or a directory above which, no longer exists. */
function isGoneError(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}
