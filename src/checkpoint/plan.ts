import type { Entry } from '../save/tree.js';
import type { XattrMap } from '../save/xattrs.js';

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
  upperXattrs: XattrMap;
  /** The parent link's tree, walked alike. */
  parent: Map<string, Entry>;
  parentXattrs: XattrMap;
  /**
   * Files whose ctime (ms) is at or after this changed since the parent
   * (src/changes/baseline.ts): their contents are not read, they are taken
   * whole. Earlier ones hold what the parent holds.
   */
  contentsSinceMs: number;
  /**
   * Names mksquashfs cannot be told to leave out (its exclude file holds one
   * path a line): an unchanged entry under an included directory with such a
   * name is taken whole. Default: a newline in the name.
   */
  cannotExclude?: (rel: string) => boolean;
}

const parentOf = (rel: string): string => {
  const at = rel.lastIndexOf('/');
  return at < 0 ? '' : rel.slice(0, at);
};
const nameOf = (rel: string): string => rel.slice(rel.lastIndexOf('/') + 1);
const isUnder = (rel: string, dir: string): boolean => dir === '' || rel.startsWith(`${dir}/`);

function xattrText(m: Map<string, string> | undefined): string {
  return m && m.size ? [...m].map(([k, v]) => `${k}=${v}`).sort().join(' ') : '';
}

/** The path's own metadata as a save keeps it, a directory's mtime aside (it follows its entries, which are listed themselves). */
function sameMeta(u: Entry, p: Entry): boolean {
  if (u.type !== p.type || u.mode !== p.mode || u.uid !== p.uid || u.gid !== p.gid) return false;
  if (u.type === 'dir') return true;
  if (u.size !== p.size || u.target !== p.target || u.rdev !== p.rdev) return false;
  // squashfs keeps whole seconds.
  return Math.floor(u.mtimeMs / 1000) === Math.floor(p.mtimeMs / 1000);
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

/**
 * Plans a delta from the upper layer's and the parent's walks. Contents are
 * never read: a file is changed when its metadata, xattrs or hard-link group
 * differ, or its ctime says it was touched since the parent. A directory
 * whose own mode, owner or xattrs changed (made opaque, say) is removed and
 * re-added with all it holds, so nothing of the parent's survives in it.
 */
export function planDelta(input: PlanInput): DeltaPlan {
  const { upper, parent } = input;
  const cannotExclude = input.cannotExclude ?? ((rel: string) => nameOf(rel).includes('\n'));
  const changed = new Set<string>();
  const removals = new Set<string>();
  /** Directories taken with all they hold. */
  const whole: string[] = [];
  const uPartners = linkPartners(upper);
  const pPartners = linkPartners(parent);

  for (const [rel, u] of upper) {
    if (rel === '') continue;
    const p = parent.get(rel);
    if (!p) {
      changed.add(rel);
      if (u.type === 'dir') whole.push(rel);
      continue;
    }
    const same =
      sameMeta(u, p) &&
      xattrText(input.upperXattrs.get(rel)) === xattrText(input.parentXattrs.get(rel)) &&
      (u.type === 'dir' || (u.ctimeMs < input.contentsSinceMs && uPartners.get(rel) === pPartners.get(rel)));
    if (same) continue;
    changed.add(rel);
    removals.add(rel);
    if (u.type === 'dir') whole.push(rel);
  }
  for (const rel of parent.keys()) if (rel !== '' && !upper.has(rel)) removals.add(rel);

  // Whole directories: everything below them goes in.
  if (whole.length) {
    const wholeSet = new Set(whole);
    for (const rel of upper.keys()) {
      for (let d = parentOf(rel); rel !== '' && d !== ''; d = parentOf(d)) {
        if (wholeSet.has(d)) {
          changed.add(rel);
          break;
        }
      }
    }
  }

  const include = new Set<string>(['']);
  const addWithAncestors = (rel: string) => {
    for (let r = rel; !include.has(r); r = parentOf(r)) include.add(r);
  };
  // Until nothing more comes in: a hard-link group comes in whole, and an
  // entry that cannot be left out of an included directory comes in too.
  for (let more = [...changed]; more.length; ) {
    for (const rel of more) addWithAncestors(rel);
    const next: string[] = [];
    const take = (rel: string) => {
      if (changed.has(rel)) return;
      changed.add(rel);
      if (parent.has(rel)) removals.add(rel);
      next.push(rel);
    };
    const groups = new Map<string, string[]>();
    for (const [rel, first] of uPartners) groups.set(first, [...(groups.get(first) ?? []), rel]);
    for (const members of groups.values()) if (members.some((m) => changed.has(m))) members.forEach(take);
    for (const rel of upper.keys()) {
      if (rel !== '' && !changed.has(rel) && include.has(parentOf(rel)) && cannotExclude(rel)) {
        take(rel);
        if (upper.get(rel)!.type === 'dir') for (const sub of upper.keys()) if (isUnder(sub, rel) && sub !== rel) take(sub);
      }
    }
    more = next;
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
