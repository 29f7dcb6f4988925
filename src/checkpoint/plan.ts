import type { Entry } from '../save/tree.js';
import type { XattrMap } from '../save/xattrs.js';
import { canExclude } from '../save/wildcards.js';
import type { ParentView } from './parent.js';

/**
 * What a checkpoint delta holds (docs/state-format.md "Checkpoint deltas"):
 * the entries of the upper layer to put in its squashfs part, and the paths
 * the boot removes before unpacking it, so that the parent link's tree with
 * the removals done and the squashfs part unpacked over it equals the upper
 * layer.
 */
export interface DeltaPlan {
  /**
   * Every entry of the squashfs part, the root ("") and the directories
   * above each changed entry among them: unsquashfs -f sets their owner,
   * mode and xattrs again, which are the parent's (a directory whose own
   * ones changed is re-added whole instead).
   */
  include: Set<string>;
  /** What changed itself, a subset of include: the rest is only the way to it. */
  changed: Set<string>;
  /** The removal list: top-most paths only, in walk order. */
  removals: string[];
}

export interface PlanInput {
  /** The upper layer now (walkTree with the save's excludes; the save's own record names left out). */
  upper: Map<string, Entry>;
  /** The tree the delta extends (parent.ts), looked up only where something changed. */
  parent: ParentView;
  /**
   * Entries whose ctime (ms) is at or after this changed since the parent
   * (src/changes/baseline.ts): every change to an entry's data, metadata,
   * xattrs or links, and every name added to or removed from a directory,
   * sets a ctime no user can set back. Older ones hold what the parent holds
   * and are never looked at again.
   */
  contentsSinceMs: number;
  /** The xattrs of the changed directories the parent has too (touchedDirs), on each side. */
  upperXattrs: XattrMap;
  parentXattrs: XattrMap;
}

const parentOf = (rel: string): string => {
  const at = rel.lastIndexOf('/');
  return at < 0 ? '' : rel.slice(0, at);
};
const nameOf = (rel: string): string => rel.slice(rel.lastIndexOf('/') + 1);
const joinRel = (dir: string, name: string): string => (dir ? `${dir}/${name}` : name);

/** An entry's xattrs as one comparable text, in name order. */
export function xattrText(m: Map<string, string> | undefined): string {
  return m && m.size ? [...m].map(([k, v]) => `${k}=${v}`).sort().join(' ') : '';
}

/** Per non-directory with other names: the first path of its inode in walk order. */
export function linkPartners(entries: Map<string, Entry>): Map<string, string> {
  const first = new Map<number, string>();
  const out = new Map<string, string>();
  for (const [rel, e] of entries) {
    if (e.type === 'dir' || e.nlink < 2) continue;
    if (!first.has(e.ino)) first.set(e.ino, rel);
    out.set(rel, first.get(e.ino)!);
  }
  return out;
}

/** Each directory's entries in the walk, by the directory. */
export function childrenIndex(entries: Map<string, Entry>): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const rel of entries.keys()) {
    if (rel === '') continue;
    const dir = parentOf(rel);
    const list = out.get(dir);
    if (list) list.push(rel);
    else out.set(dir, [rel]);
  }
  return out;
}

/** The directories changed since the parent that the parent has as directories: those whose own xattrs planDelta compares. */
export function touchedDirs(upper: Map<string, Entry>, parent: ParentView, since: number): string[] {
  return [...upper].filter(([rel, u]) => rel !== '' && u.type === 'dir' && u.ctimeMs >= since && parent.entry(rel)?.type === 'dir').map(([rel]) => rel);
}

/**
 * Plans a delta from the upper layer's walk, looking into the parent only
 * where something changed (the entries and directories with a ctime since
 * it). Contents are never read. A changed entry the parent has is removed
 * and added again, so nothing of the old one (a hard link, another type)
 * survives. A directory whose own mode, owner or xattrs changed (made
 * opaque, say), or that is new, is added with all it holds; in any other
 * changed directory, the names the parent has and the upper layer has not
 * are removed.
 */
export function planDelta(input: PlanInput): DeltaPlan {
  const { upper, parent } = input;
  const since = input.contentsSinceMs;
  const changed = new Set<string>();
  const removals = new Set<string>();
  /** Directories taken with all they hold. */
  const whole = new Set<string>();
  const kids = childrenIndex(upper);
  const inParent = (rel: string) => parent.entry(rel) !== undefined;

  const takeDir = (rel: string) => {
    changed.add(rel);
    whole.add(rel);
    if (inParent(rel)) removals.add(rel);
  };
  for (const [rel, u] of upper) {
    if (rel === '' || u.ctimeMs < since) continue;
    if (u.type !== 'dir') {
      changed.add(rel);
      if (inParent(rel)) removals.add(rel);
      continue;
    }
    const p = parent.entry(rel);
    const same =
      p?.type === 'dir' && p.mode === u.mode && p.uid === u.uid && p.gid === u.gid &&
      xattrText(input.upperXattrs.get(rel)) === xattrText(input.parentXattrs.get(rel));
    if (!same) takeDir(rel);
  }
  // In a changed directory kept as it is: what the parent has there and the
  // upper layer has not was removed, and an entry the parent lacks is taken
  // whatever its ctime says (the clock set back past the parent, say).
  for (const [dir, u] of upper) {
    if (u.type !== 'dir' || u.ctimeMs < since || whole.has(dir)) continue;
    const before = new Set<string>();
    for (const name of parent.children(dir)) {
      const rel = joinRel(dir, name);
      before.add(rel);
      if (!upper.has(rel)) removals.add(rel);
    }
    for (const rel of kids.get(dir) ?? []) {
      if (changed.has(rel) || before.has(rel)) continue;
      if (upper.get(rel)!.type === 'dir') takeDir(rel);
      else changed.add(rel);
    }
  }

  // Whole directories: everything below them goes in.
  const addBelow = (dir: string) => {
    for (const rel of kids.get(dir) ?? []) {
      changed.add(rel);
      if (upper.get(rel)!.type === 'dir') addBelow(rel);
    }
  };
  for (const dir of whole) addBelow(dir);

  const include = new Set<string>(['']);
  const uPartners = linkPartners(upper);
  const groups = new Map<string, string[]>();
  for (const [rel, first] of uPartners) groups.set(first, [...(groups.get(first) ?? []), rel]);
  const take = (rel: string) => {
    if (changed.has(rel)) return;
    changed.add(rel);
    if (inParent(rel)) removals.add(rel);
    if (upper.get(rel)!.type === 'dir') addBelow(rel);
  };
  // Until nothing more comes in: the way to each changed entry is included,
  // a hard-link group comes in whole, and an entry of an included directory
  // that no exclude line can name (wildcards.ts: a path thousands of bytes
  // long, mostly escaped) comes in too.
  for (let size = -1; size !== changed.size; ) {
    size = changed.size;
    for (const rel of changed) for (let r = rel; !include.has(r); r = parentOf(r)) include.add(r);
    for (const members of groups.values()) if (members.some((m) => changed.has(m))) members.forEach(take);
    for (const dir of include) for (const rel of kids.get(dir) ?? []) if (!include.has(rel) && !canExclude(rel)) take(rel);
  }

  return { include, changed, removals: topMost(removals) };
}

/** The paths of SET that no other path of it holds (a removed directory takes what it holds). */
export function topMost(set: Set<string>): string[] {
  return [...set]
    .filter((rel) => {
      for (let d = parentOf(rel); d !== ''; d = parentOf(d)) if (set.has(d)) return false;
      return true;
    })
    .sort((a, b) => (Buffer.from(a, 'latin1').compare(Buffer.from(b, 'latin1'))));
}

/** The removal list is padded with NULs to a multiple of this: the seal then starts on a block, as a state's does. */
export const REMOVALS_ALIGN = 4096;

/** Why REL cannot be in a removal list, or undefined. */
export function badRemovalPath(rel: string): string | undefined {
  if (rel === '') return 'an empty path';
  if (rel.includes('\0')) return 'a NUL byte';
  if (rel.startsWith('/')) return 'a leading /';
  if (rel.split('/').some((c) => c === '' || c === '.' || c === '..')) return 'an empty, . or .. component';
  return undefined;
}

/**
 * The removal list's bytes (latin1 paths as tree.ts keys them, each ended
 * by a NUL), padded with NULs so that the list ends on a REMOVALS_ALIGN
 * boundary when it starts on one. The squashfs part before it ends on a
 * 4 KiB boundary (mksquashfs pads it).
 */
export function encodeRemovals(rels: readonly string[]): Buffer {
  for (const rel of rels) {
    const bad = badRemovalPath(rel);
    if (bad) throw new Error(`a removal list path holds ${bad}: ${JSON.stringify(rel)}`);
  }
  const list = Buffer.from(rels.map((r) => `${r}\0`).join(''), 'latin1');
  const padded = Math.ceil(list.length / REMOVALS_ALIGN) * REMOVALS_ALIGN;
  return Buffer.concat([list, Buffer.alloc(padded - list.length)]);
}

/** The paths of a removal list; throws on one a boot would refuse. */
export function decodeRemovals(data: Buffer): string[] {
  let end = data.length;
  while (end > 0 && data[end - 1] === 0) end--;
  if (end === 0) return [];
  const rels = data.subarray(0, end).toString('latin1').split('\0');
  for (const rel of rels) {
    const bad = badRemovalPath(rel);
    if (bad) throw new Error(`the removal list holds a path with ${bad}: ${JSON.stringify(rel)}`);
  }
  return rels;
}

/** A parent known as a whole walk (tests, and a tree walked anyway). */
export function mapParent(entries: Map<string, Entry>): ParentView {
  const kids = childrenIndex(entries);
  return {
    entry: (rel) => entries.get(rel),
    children: (rel) => (kids.get(rel) ?? []).map(nameOf).sort(),
  };
}
