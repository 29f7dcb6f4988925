import { closeSync, openSync, readdirSync, readSync } from 'node:fs';
import { IntegrityError } from '../lib/errors.js';
import { withEach, withLoopDevice, withMount, withTempDir } from '../lib/resources.js';
import { TreeReach } from '../save/reach.js';
import { entryAt, isOwnRecord, type Entry } from '../save/tree.js';
import { readAclsOf, recordedAcls, type Acls } from '../save/acl.js';
import { readXattrsAndAclsOf, readXattrsOf, shownValue, type XattrMap } from '../save/xattrs.js';
import { readSeal } from '../state/seal.js';
import { decodeRemovals, planDelta, touchedDirs, type DeltaPlan } from './plan.js';

/**
 * The tree a delta extends, looked up a path at a time: a checkpoint reads
 * only the directories that changed since it (src/checkpoint/plan.ts), never
 * the whole parent.
 */
export interface ParentView {
  /** The parent's entry at REL, or undefined when it has none. */
  entry(rel: string): Entry | undefined;
  /** The names in the parent's directory REL (latin1, sorted); none when it is not one. */
  children(rel: string): string[];
}

const join = (dir: string, name: string) => (dir ? `${dir}/${name}` : name);

/** One link of a chain, mounted: its tree, and for a delta the paths its removal list names (top-most). */
export interface MountedLink {
  root: string;
  removed: ReadonlySet<string>;
}

/**
 * A chain of links as the boot unpacks it (initramfs/lib/chain.sh): the
 * base, then each delta's removals and its tree over the rest. A path is
 * the last link's that holds it, unless a later link removed it (or a
 * directory above it) first. A single tree is a chain of one link.
 */
export class ChainView implements ParentView {
  private readonly reaches: TreeReach[];
  private readonly records = new Map<number, Promise<Acls | undefined>>();

  constructor(private readonly links: readonly MountedLink[]) {
    this.reaches = links.map((l) => new TreeReach(l.root));
  }

  close(): void {
    for (const r of this.reaches) r.close();
  }

  /** The index of the link REL comes from, or -1. */
  private locate(rel: string): number {
    for (let i = this.links.length - 1; i >= 0; i--) {
      if (this.lstat(i, rel)) return i;
      if (covers(this.links[i]!.removed, rel)) return -1;
    }
    return -1;
  }

  private lstat(i: number, rel: string): Entry | undefined {
    try {
      return entryAt(this.reaches[i]!.path(rel));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw e;
    }
  }

  /** Where REL can be read, in the link it comes from; undefined when the parent has none. */
  pathOf(rel: string): string | Buffer | undefined {
    const i = this.locate(rel);
    return i < 0 ? undefined : this.reaches[i]!.path(rel);
  }

  entry(rel: string): Entry | undefined {
    if (isOwnRecord(rel)) return undefined;
    const i = this.locate(rel);
    return i < 0 ? undefined : this.lstat(i, rel);
  }

  children(rel: string): string[] {
    const names = new Set<string>();
    for (const [i, reach] of this.reaches.entries()) {
      if (this.lstat(i, rel)?.type !== 'dir') continue;
      for (const name of readdirSync(reach.path(rel), { encoding: 'buffer' })) names.add(name.toString('latin1'));
    }
    // One link removes nothing: what it lists, it holds.
    const alone = this.links.length === 1;
    return [...names].filter((name) => !isOwnRecord(join(rel, name)) && (alone || this.locate(join(rel, name)) >= 0)).sort();
  }

  /** The xattrs (as readXattrs shows them) of the entries RELS name, each read from the link it comes from. */
  async xattrsOf(rels: readonly string[]): Promise<XattrMap> {
    const out: XattrMap = new Map();
    for (const [i, group] of this.byLink(rels)) for (const [rel, x] of await readXattrsOf(this.links[i]!.root, group)) out.set(rel, x);
    return out;
  }

  /**
   * The POSIX ACLs of the entries RELS name, each from the link it comes
   * from: its ACL record when it has one (squashfs keeps no ACLs, acl.ts),
   * else the tree's own (an unpacked one).
   */
  async aclsOf(rels: readonly string[]): Promise<Acls> {
    const out: Acls = new Map();
    for (const [i, group] of this.byLink(rels)) {
      const root = this.links[i]!.root;
      const acls = (await this.recordOf(i)) ?? (await readAclsOf(root, group));
      for (const rel of group) out.set(rel, acls.get(rel) ?? new Map());
    }
    return out;
  }

  /** xattrsOf with the entries' ACLs (aclsOf) among their xattrs, as readXattrsAndAclsOf shows them. */
  async xattrsAndAclsOf(rels: readonly string[]): Promise<XattrMap> {
    const out: XattrMap = new Map();
    for (const [i, group] of this.byLink(rels)) {
      const root = this.links[i]!.root;
      const record = await this.recordOf(i);
      if (!record) {
        for (const [rel, x] of await readXattrsAndAclsOf(root, group)) out.set(rel, x);
        continue;
      }
      const xattrs = await readXattrsOf(root, group);
      for (const rel of group) {
        const acls = [...(record.get(rel) ?? [])].map(([k, v]): [string, string] => [k, shownValue(v)]);
        out.set(rel, new Map([...(xattrs.get(rel) ?? []), ...acls]));
      }
    }
    return out;
  }

  /** The ACL record of link I, read once: cairn diff asks for ACLs twice, the changed directories' and then the changed entries'. */
  private recordOf(i: number): Promise<Acls | undefined> {
    let record = this.records.get(i);
    if (!record) {
      record = recordedAcls(this.links[i]!.root);
      this.records.set(i, record);
    }
    return record;
  }

  /** RELS the parent has, by the link each comes from. */
  private byLink(rels: readonly string[]): Map<number, string[]> {
    const out = new Map<number, string[]>();
    for (const rel of rels) {
      const i = this.locate(rel);
      if (i >= 0) out.set(i, [...(out.get(i) ?? []), rel]);
    }
    return out;
  }
}

/**
 * planDelta of the upper layer (its walk UPPER, at UPPER_ROOT) over the
 * chain PARENT. The directories that changed since it are compared with the
 * chain's by their xattrs and their POSIX ACLs too: an ACL set on a
 * directory or taken off it can leave its mode as it was.
 */
export async function planOverChain(upperRoot: string, upper: Map<string, Entry>, parent: ChainView, since: number): Promise<DeltaPlan> {
  const dirs = touchedDirs(upper, parent, since);
  const [upperXattrs, parentXattrs] = await Promise.all([readXattrsAndAclsOf(upperRoot, dirs), parent.xattrsAndAclsOf(dirs)]);
  return planDelta({ upper, parent, upperXattrs, parentXattrs, contentsSinceMs: since });
}

/** Whether REL or a directory above it is in SET. */
export function covers(set: ReadonlySet<string>, rel: string): boolean {
  if (set.size === 0) return false;
  for (let r = rel; ; r = r.slice(0, r.lastIndexOf('/'))) {
    if (set.has(r)) return true;
    if (!r.includes('/')) return false;
  }
}

/**
 * Mounts each link of a chain (files on the data partition, the base first)
 * read only, reads each delta's removal list, and runs FN with the chain's
 * view; everything is unmounted after. The links are mounted side by side:
 * one after the other, a chain of 8 took a checkpoint half a second.
 */
export async function withChainView<T>(files: readonly string[], fn: (view: ChainView) => Promise<T>): Promise<T> {
  const removed = await Promise.all(files.map(removalsOf));
  const mountLink = (file: string, body: (root: string) => Promise<void>) =>
    withLoopDevice(file, { readOnly: true }, (device) =>
      withTempDir('cairn-link-', (mnt) => withMount(device, mnt, { type: 'squashfs', options: ['ro'] }, () => body(mnt))),
    );
  return withEach(files, mountLink, async (roots) => {
    const view = new ChainView(roots.map((root, i) => ({ root, removed: removed[i]! })));
    try {
      return await fn(view);
    } finally {
      view.close();
    }
  });
}

/** A link's removal list (none for a whole state), from its seal's `removed`. */
async function removalsOf(file: string): Promise<Set<string>> {
  const check = await readSeal(file, { deltas: true });
  if (!check.ok) throw new IntegrityError(file, `its seal cannot be read: ${check.problem}`);
  const { kind, size, removed } = check.seal;
  if (kind !== 'delta' || !removed) return new Set();
  return new Set(decodeRemovals(readRange(file, size - removed, removed)));
}

/** LENGTH bytes of FILE (a link, or a device holding one) from OFFSET. */
export function readRange(file: string, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  const fd = openSync(file, 'r');
  try {
    for (let got = 0; got < length; ) {
      const n = readSync(fd, buf, got, length - got, offset + got);
      if (n === 0) throw new IntegrityError(file, `it ends ${length - got} bytes early, inside its removal list`);
      got += n;
    }
  } finally {
    closeSync(fd);
  }
  return buf;
}
