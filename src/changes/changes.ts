import { closeSync, lstatSync, openSync, readSync, type Stats } from 'node:fs';
import { planOverChain, type ChainView } from '../checkpoint/parent.js';
import { xattrText } from '../checkpoint/plan.js';
import { join } from 'node:path';
import { readAclsOf } from '../save/acl.js';
import { compareEntry, compareTrees } from '../save/compare.js';
import type { ExcludeMatcher } from '../save/exclude.js';
import { openRegular, READ_ONLY_FILE, TreeReach } from '../save/reach.js';
import { dropOwnRecords, walkTree, type Entry } from '../save/tree.js';
import { readXattrs, readXattrsOf, type XattrMap } from '../save/xattrs.js';

/** A: the path appeared; M: it is there in both, with other contents or metadata; D: it is gone. */
export type ChangeKind = 'A' | 'M' | 'D';

export interface Change {
  kind: ChangeKind;
  /** As lbu prints it: relative to /, a directory with a trailing slash; "." for the root. */
  path: string;
  /** The walk's key (latin1 bytes), for sorting and lookups. */
  rel: string;
  /** What differs, in words ("contents", "mode", "whiteout", ...). */
  what: string[];
  /** Bytes of file data a save would store for it anew: the file's size for A and M files. */
  bytes: number;
}

export interface ChangeSet {
  changes: Change[];
  added: number;
  changed: number;
  removed: number;
  bytes: number;
  /** Files whose contents were read (their ctime was at or after the baseline's). */
  contentsRead: number;
}

export interface ChangesOptions {
  /** The upper layer. */
  upperRoot: string;
  /** The baseline state, mounted or unpacked; undefined when there is none (a clean boot): everything is added. */
  baselineRoot: string | undefined;
  /** Files whose ctime (ms) is at or after this have their contents compared; 0: all. */
  contentsSinceMs: number;
  /** The save's exclude list: what no save keeps is never unsaved. */
  exclude?: ExcludeMatcher;
  /**
   * The read-only base (lower layer): a path new in the upper layer that the
   * base has is a base file the user changed (M), not a new one (A), and a
   * directory made opaque hides, and so removes, what the base holds in it.
   */
  lowerRoot?: string;
}

const OPAQUE = 'trusted.overlay.opaque';
/** "y" as getfattr's hex. */
const OPAQUE_YES = '0x79';
const isWhiteout = (e: Entry | undefined): boolean => e?.type === 'char' && e.rdev === 0;

/**
 * What changed in the upper layer since its baseline state. One walk of each
 * tree (metadata only) and the save's own comparison (compare.ts) find every
 * difference of type, mode, owner, size, link target, device, hard-link
 * group, xattr and ACL; contents are read only for files changed since the
 * baseline's moment (baseline.ts). A regular file whose modification time
 * differs (by the second, as squashfs keeps it) is changed too: that is what
 * a save would store anew. A directory's own modification time is not
 * compared: it follows its entries, which are listed themselves.
 */
export async function computeChanges(options: ChangesOptions): Promise<ChangeSet> {
  const upper = walkTree(options.upperRoot, options.exclude);
  // The save's own records at the root are never the user's to save (tree.ts leaves them out of a save alike).
  dropOwnRecords(upper);
  const lower = options.lowerRoot ? new TreeReach(options.lowerRoot) : undefined;
  const baseline = options.baselineRoot ? new TreeReach(options.baselineRoot) : undefined;
  const inLower = (rel: string) => (lower ? lstatIn(lower, rel) : undefined);
  try {
    if (!options.baselineRoot || !baseline) {
      const changes = [...upper.entries].filter(([rel]) => rel).flatMap(([rel, u]) => onlyInUpper(rel, u, inLower(rel)) ?? []);
      if (options.lowerRoot) changes.push(...hiddenByOpaque(options.lowerRoot, upper.entries, changes, newlyOpaque(await readXattrs(options.upperRoot), new Map())));
      return summarize(changes, 0);
    }
    const since = options.contentsSinceMs;
    const result = await compareTrees({
      upper,
      upperRoot: options.upperRoot,
      imageRoot: options.baselineRoot,
      since,
      maxDifferences: Infinity,
      compareContentsOf: (_rel, u) => u.ctimeMs >= since,
    });
    const contentsRead = result.filesCompared;
    const byRel = new Map<string, string[]>();
    for (const d of result.differences) byRel.set(d.rel, [...(byRel.get(d.rel) ?? []), d.what]);
    // The root's own metadata is the overlay's and the boot's, not the user's.
    byRel.delete('');
    // A new modification time comes with a new ctime: only files changed since are looked at.
    for (const [rel, u] of upper.entries) {
      if (u.type !== 'file' || u.ctimeMs < since || byRel.has(rel)) continue;
      const b = lstatIn(baseline, rel);
      if (b?.isFile() && Math.floor(b.mtimeMs / 1000) !== Math.floor(u.mtimeMs / 1000)) byRel.set(rel, ['modification time']);
    }
    const changes: Change[] = [];
    for (const [rel, whats] of byRel) {
      const u = upper.entries.get(rel);
      const b = whats.includes('presence') || whats.includes('type') ? lstatIn(baseline, rel) : undefined;
      const wasWhiteout = b !== undefined && b.isCharacterDevice() && b.rdev === 0;
      if (!u) {
        // Only in the baseline: gone, unless it was a whiteout, whose path the base shows again.
        changes.push({ kind: wasWhiteout ? 'A' : 'D', path: shown(rel, b?.isDirectory() ?? false), rel, what: wasWhiteout ? ['whiteout removed'] : [], bytes: 0 });
      } else if (whats.includes('presence') || (whats.includes('type') && (isWhiteout(u) || wasWhiteout))) {
        const c = onlyInUpper(rel, u, isWhiteout(u) || wasWhiteout ? undefined : inLower(rel));
        if (c) changes.push(c);
      } else {
        const what = [...new Set(whats)];
        const rewritten = what.some((w) => w === 'contents' || w === 'size' || w === 'type' || w === 'modification time');
        changes.push(change('M', rel, u, what, rewritten ? fileBytes(u) : 0));
      }
    }
    if (options.lowerRoot) {
      const [now, before] = await Promise.all([readXattrs(options.upperRoot), readXattrs(options.baselineRoot)]);
      changes.push(...hiddenByOpaque(options.lowerRoot, upper.entries, changes, newlyOpaque(now, before)));
    }
    return summarize(changes, contentsRead);
  } finally {
    lower?.close();
    baseline?.close();
  }
}

/** An upper-layer entry the baseline lacks: a whiteout removes a base file, a base file copied up is changed, the rest is added. */
function onlyInUpper(rel: string, u: Entry, lower: Stats | undefined): Change | undefined {
  if (isWhiteout(u)) return change('D', rel, u, ['whiteout'], 0);
  if (!lower) return change('A', rel, u, [], fileBytes(u));
  // A base directory is copied up to hold what changed inside it: only its own new mode or owner is a change of its own.
  if (u.type === 'dir' && lower.isDirectory() && (lower.mode & 0o7777) === u.mode && lower.uid === u.uid && lower.gid === u.gid) return undefined;
  return change('M', rel, u, ['changed from the base'], fileBytes(u));
}

function lstatIn(reach: TreeReach, rel: string): Stats | undefined {
  try {
    return lstatSync(reach.path(rel));
  } catch {
    return undefined;
  }
}

/** The directories opaque in NOW and not in BEFORE (xattrs by path). */
function newlyOpaque(now: XattrMap, before: XattrMap): string[] {
  return [...now].filter(([rel, attrs]) => rel && attrs.get(OPAQUE) === OPAQUE_YES && before.get(rel)?.get(OPAQUE) !== OPAQUE_YES).map(([rel]) => rel);
}

/**
 * A directory that became opaque (removed and made again over the base's)
 * hides what the base holds in it: each such path, not in the upper layer
 * and not listed already, is removed, and the directory itself is changed.
 */
function hiddenByOpaque(lowerRoot: string, upper: Map<string, Entry>, changes: Change[], opaque: readonly string[]): Change[] {
  const listed = new Map(changes.map((c) => [c.rel, c]));
  const out: Change[] = [];
  for (const rel of opaque) {
    const u = upper.get(rel);
    if (u?.type !== 'dir') continue;
    let hidden: Map<string, Entry>;
    try {
      hidden = walkTree(join(lowerRoot, Buffer.from(rel, 'latin1').toString())).entries;
    } catch {
      continue; // the base has nothing there: nothing is hidden
    }
    const own = listed.get(rel);
    if (own && own.kind !== 'A') own.what = [...new Set([...own.what.filter((w) => w !== 'changed from the base'), 'made opaque'])];
    else if (!own) out.push(change('M', rel, u, ['made opaque'], 0));
    for (const [sub, e] of hidden) {
      const inside = `${rel}/${sub}`;
      if (sub && !upper.has(inside) && !listed.has(inside)) out.push({ kind: 'D', path: shown(inside, e.type === 'dir'), rel: inside, what: ['hidden by an opaque directory'], bytes: 0 });
    }
  }
  return out;
}

const fileBytes = (u: Entry): number => (u.type === 'file' ? u.size : 0);

/** A path as lbu prints it: no leading slash; a directory's with a trailing one. */
function shown(rel: string, dir: boolean): string {
  if (!rel) return '.';
  const p = Buffer.from(rel, 'latin1').toString('utf8');
  return dir ? `${p}/` : p;
}

function change(kind: ChangeKind, rel: string, u: Entry, what: string[], bytes: number): Change {
  return { kind, path: shown(rel, u.type === 'dir'), rel, what, bytes };
}

/**
 * What changed in the upper layer since a checkpoint chain's tip (the
 * baseline once a checkpoint was written): the entries a checkpoint would
 * take now (checkpoint/plan.ts, by their ctimes), each compared with the
 * chain's own, xattrs and contents too, so that a file changed and changed
 * back is not listed; and what a checkpoint would remove.
 */
export async function computeChainChanges(options: Omit<ChangesOptions, 'baselineRoot'> & { parent: ChainView }): Promise<ChangeSet> {
  const { parent } = options;
  const upper = walkTree(options.upperRoot, options.exclude);
  dropOwnRecords(upper);
  const since = options.contentsSinceMs;
  const plan = await planOverChain(options.upperRoot, upper.entries, parent, since);
  const both = [...plan.changed].filter((rel) => parent.entry(rel) !== undefined);
  const [xu, xp, au, ap] = await Promise.all([readXattrsOf(options.upperRoot, both), parent.xattrsOf(both), readAclsOf(options.upperRoot, both), parent.aclsOf(both)]);
  const lower = options.lowerRoot ? new TreeReach(options.lowerRoot) : undefined;
  const reach = new TreeReach(options.upperRoot);
  const changes: Change[] = [];
  let contentsRead = 0;
  try {
    for (const rel of plan.changed) {
      const u = upper.entries.get(rel)!;
      const p = parent.entry(rel);
      if (!p || isWhiteout(p) !== isWhiteout(u)) {
        const c = p && isWhiteout(p) ? change('A', rel, u, ['whiteout removed'], fileBytes(u)) : onlyInUpper(rel, u, isWhiteout(u) || !lower ? undefined : lstatIn(lower, rel));
        if (c) changes.push(c);
        continue;
      }
      const what: string[] = [];
      compareEntry(rel, u, p, (_r, w) => what.push(w));
      if (xattrText(xu.get(rel)) !== xattrText(xp.get(rel))) what.push('xattrs');
      if (xattrText(au.get(rel)) !== xattrText(ap.get(rel))) what.push('ACL');
      if (u.type === 'file' && p.type === 'file' && u.size === p.size) {
        if (Math.floor(u.mtimeMs / 1000) !== Math.floor(p.mtimeMs / 1000)) what.push('modification time');
        contentsRead++;
        if (!sameContents(reach, rel, parent.pathOf(rel)!)) what.push('contents');
      }
      if (what.length === 0) continue;
      const rewritten = what.some((w) => w === 'contents' || w === 'size' || w === 'type' || w === 'modification time');
      changes.push(change('M', rel, u, what, rewritten ? fileBytes(u) : 0));
    }
    const removed = (rel: string) => {
      const p = parent.entry(rel);
      const wasWhiteout = isWhiteout(p);
      changes.push({ kind: wasWhiteout ? 'A' : 'D', path: shown(rel, p?.type === 'dir'), rel, what: wasWhiteout ? ['whiteout removed'] : [], bytes: 0 });
    };
    // A directory the plan re-adds whole (its mode, owner, xattrs or ACL
    // changed) is in the removals as a whole: what it lost is found below it.
    const removedBelow = (dir: string) => {
      for (const name of parent.children(dir)) {
        const rel = dir ? `${dir}/${name}` : name;
        const u = upper.entries.get(rel);
        if (!u) removed(rel);
        else if (u.type === 'dir' && parent.entry(rel)?.type === 'dir') removedBelow(rel);
      }
    };
    for (const rel of plan.removals) {
      if (!upper.entries.has(rel)) removed(rel);
      else if (upper.entries.get(rel)!.type === 'dir' && parent.entry(rel)?.type === 'dir') removedBelow(rel);
    }
    if (options.lowerRoot) {
      const dirs = [...plan.changed].filter((rel) => upper.entries.get(rel)?.type === 'dir');
      const [now, before] = await Promise.all([readXattrsOf(options.upperRoot, dirs), parent.xattrsOf(dirs.filter((rel) => parent.entry(rel)))]);
      changes.push(...hiddenByOpaque(options.lowerRoot, upper.entries, changes, newlyOpaque(now, before)));
    }
  } finally {
    lower?.close();
    reach.close();
  }
  return summarize(changes, contentsRead);
}

/**
 * Whether the upper layer's file at REL holds the same bytes as the
 * parent's at PARENT (a read-only link), read side by side. A file gone or
 * swapped for something else since the walk is not the same.
 */
function sameContents(reach: TreeReach, rel: string, parent: string | Buffer): boolean {
  const fa = openRegular(reach, rel);
  if (fa === undefined) return false;
  const fb = openSync(parent, READ_ONLY_FILE);
  const ba = Buffer.allocUnsafe(1 << 20);
  const bb = Buffer.allocUnsafe(1 << 20);
  try {
    for (;;) {
      const na = readSync(fa, ba, 0, ba.length, null);
      let nb = 0;
      while (nb < na) {
        const n = readSync(fb, bb, nb, na - nb, null);
        if (n === 0) return false;
        nb += n;
      }
      if (na === 0) return readSync(fb, bb, 0, 1, null) === 0;
      if (ba.compare(bb, 0, nb, 0, na) !== 0) return false;
    }
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}

function summarize(changes: Change[], contentsRead: number): ChangeSet {
  changes.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  const count = (k: ChangeKind) => changes.filter((c) => c.kind === k).length;
  return {
    changes,
    added: count('A'),
    changed: count('M'),
    removed: count('D'),
    bytes: changes.reduce((n, c) => n + c.bytes, 0),
    contentsRead,
  };
}
