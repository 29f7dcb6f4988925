import { randomUUID } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { chmod, lstat, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config.js';
import { appendDurably, fsyncFile, renameDurably } from '../lib/durable.js';
import { IntegrityError, RefusedError, VerifyMismatchError } from '../lib/errors.js';
import { loopUsesDirectIo, withLoopDevice, withMount, withTempDir } from '../lib/resources.js';
import { MODES } from '../names.js';
import { aclPseudoFile } from '../save/acl.js';
import { compareTrees, type Difference } from '../save/compare.js';
import { compileExcludes } from '../save/exclude.js';
import { TreeReach } from '../save/reach.js';
import { mksquashfsArgs, runMksquashfs } from '../save/squash.js';
import { displayPath, dropOwnRecords, entryAt, shownPath, walkTree, type Walk } from '../save/tree.js';
import { excludeFromDir } from '../save/wildcards.js';
import { encodeSeal, readSeal, type Seal } from '../state/seal.js';
import { cksumTool, sha256InWorker } from '../state/sums.js';
import { ChainView, covers, planOverChain, readRange, withChainView, type ParentView } from './parent.js';
import { childrenIndex, decodeRemovals, encodeRemovals, type DeltaPlan } from './plan.js';

export interface DeltaOptions {
  upperDir: string;
  /**
   * What the delta extends: the chain's link files on the data partition,
   * the base first, mounted read only (parent.ts); or a tree as the boot
   * would unpack it.
   */
  parent: { links: string[] } | { root: string };
  /** Files whose ctime (ms) is at or after this changed since the parent (src/changes/baseline.ts). */
  contentsSinceMs: number;
  /** The ids of every link the delta extends, the base first, the parent last. */
  chain: string[];
  /** Where the sealed delta goes, on the data partition; its temp file is beside it. */
  output: string;
  /** The boot session, as the seal records it. */
  session: string;
  config: Pick<Config, 'excludes' | 'compression' | 'compressionLevel' | 'mksquashfsMem'>;
  /** Stop before this step, as a crash there would (crash tests). */
  stopBefore?: DeltaStep;
}

export type DeltaStep = 'squash' | 'list' | 'verify' | 'seal' | 'rename';

export interface DeltaReport {
  /** False when nothing changed: no file is written. */
  written: boolean;
  /** Bytes of the delta file, seal included. */
  bytes: number;
  entries: number;
  changed: number;
  removals: number;
  /** When the walk began: the next delta's contentsSinceMs (less a margin). */
  startedMs: number;
  seal?: Seal;
  directIo: boolean;
  seconds: Partial<Record<'plan' | DeltaStep, number>>;
}

/** The temp file a delta is written to before its rename: litter after a crash. */
export const deltaTemp = (output: string): string => `${output}.tmp`;

/**
 * Writes a checkpoint delta of the upper layer over its parent link
 * (docs/state-format.md "Checkpoint deltas") with a full save's guarantees:
 * squashed to a temp file, fsynced, read back through a direct-I/O loop
 * device and checked so that the parent with the delta applied equals the
 * upper layer, sealed, renamed into place. Unchanged files are never read.
 */
export async function writeDelta(options: DeltaOptions): Promise<DeltaReport> {
  const startedMs = Date.now();
  const seconds: DeltaReport['seconds'] = {};
  const matcher = compileExcludes(options.config.excludes);
  const temp = deltaTemp(options.output);
  let t = Date.now();
  const upper = dropOwnRecords(walkTree(options.upperDir, matcher, { forSave: true }));
  if (upper.packed.length) {
    throw new RefusedError('a sparse file too large to squash as it is changed: a checkpoint cannot keep it, a full save can', {
      hint: 'run cairn save',
    });
  }
  // Any change since the parent (a removal or rename too, by its directory)
  // gave some entry a later ctime: when none has one, nothing changed, and
  // neither the parent nor an xattr is read.
  if (![...upper.entries.values()].some((e) => e.ctimeMs >= options.contentsSinceMs)) {
    seconds.plan = (Date.now() - t) / 1000;
    return { written: false, bytes: 0, entries: 0, changed: 0, removals: 0, startedMs, directIo: false, seconds };
  }
  return withParentView(options.parent, async (parent) => {
  const plan = await planOverChain(options.upperDir, upper.entries, parent, options.contentsSinceMs);
  seconds.plan = (Date.now() - t) / 1000;
  const report = (extra: Partial<DeltaReport>): DeltaReport => ({
    written: false,
    bytes: 0,
    entries: plan.include.size,
    changed: plan.changed.size,
    removals: plan.removals.length,
    startedMs,
    directIo: false,
    seconds,
    ...extra,
  });
  if (plan.changed.size === 0 && plan.removals.length === 0) return report({});

  const step = async (name: DeltaStep, fn: () => Promise<void>): Promise<boolean> => {
    if (options.stopBefore === name) return false;
    t = Date.now();
    await fn();
    seconds[name] = (Date.now() - t) / 1000;
    return true;
  };
  let squashBytes = 0;
  let list: Buffer = Buffer.alloc(0);
  let verified: Verified | undefined;
  let seal: Seal | undefined;
  try {
    const done =
      (await step('squash', async () => {
        // Root's alone before a byte of the session is in it.
        await writeFile(temp, '', { mode: MODES.state });
        await chmod(temp, MODES.state);
        await withTempDir('cairn-delta-', (tmp) => squashDelta(options, plan, upper, tmp, temp));
        await fsyncFile(temp);
        squashBytes = (await stat(temp)).size;
      })) &&
      (await step('list', async () => {
        list = encodeRemovals(plan.removals);
        await appendDurably(temp, list);
      })) &&
      (await step('verify', async () => {
        verified = await verifyDelta(options, temp, squashBytes, list.length, plan, parent, upper, startedMs);
      })) &&
      (await step('seal', async () => {
        seal = {
          kind: 'delta',
          size: squashBytes + list.length,
          sha256: verified!.sha256,
          id: randomUUID(),
          parent: options.chain[options.chain.length - 1] ?? '',
          session: options.session,
          created: Math.floor(Date.now() / 1000),
          files: verified!.entries,
          space: verified!.space,
          removed: list.length,
          chain: options.chain,
        };
        await appendDurably(temp, encodeSeal(seal, { imageCksum: verified!.cksum }));
        const back = await readSeal(temp, { deltas: true });
        if (!back.ok || back.seal.sha256 !== seal.sha256) {
          throw new IntegrityError(temp, `the seal did not read back: ${back.ok ? 'checksum differs' : back.problem}`);
        }
      })) &&
      (await step('rename', () => renameDurably(temp, options.output)));
    if (!done) return report({});
  } catch (e) {
    // Nothing under the delta's name changed; the temp file is litter.
    const st = await lstat(temp).catch(() => undefined);
    if (st?.isFile()) await unlink(temp);
    throw e;
  }
  const bytes = (await stat(options.output)).size;
  return report({ written: true, bytes, seal, entries: verified!.entries, directIo: verified!.directIo });
  });
}

/** FN with the view of what the delta extends, mounted for as long as it runs. */
async function withParentView<T>(parent: DeltaOptions['parent'], fn: (view: ChainView) => Promise<T>): Promise<T> {
  if ('links' in parent) return withChainView(parent.links, fn);
  const view = new ChainView([{ root: parent.root, removed: new Set() }]);
  try {
    return await fn(view);
  } finally {
    view.close();
  }
}

/**
 * mksquashfs over the upper layer with everything that did not change left
 * out: a directory with nothing changed below it is left out whole, and in
 * a directory the delta goes into, what the plan does not take is left out
 * by a pattern (wildcards.ts) that names either it or what is taken,
 * whichever is shorter. Patterns, not paths: mksquashfs looks each path of an
 * exclude file up in a list as long as the file for every entry it reads,
 * and 20 000 unchanged files beside 300 changed ones cost it 0.2 s more
 * than squashing the changed ones alone.
 */
async function squashDelta(options: DeltaOptions, plan: DeltaPlan, upper: Walk, tmp: string, output: string): Promise<void> {
  const lines: Buffer[] = [];
  const reach = new TreeReach(options.upperDir);
  try {
    for (const dir of plan.include) {
      if (upper.entries.get(dir)?.type !== 'dir') continue;
      // Read again, not taken from the walk: it left out what the save's
      // patterns exclude, which must stay out here too.
      const kept: string[] = [];
      const left: string[] = [];
      for (const name of readdirSync(reach.path(dir), 'latin1')) (plan.include.has(dir ? `${dir}/${name}` : name) ? kept : left).push(name);
      const ex = excludeFromDir(dir, kept, left);
      // The plan takes in what no line can name (wildcards.ts canExclude);
      // this is something the walk did not take (an entry the save's
      // patterns exclude, or one made since), and a delta cannot drop it.
      // A whole save matches the patterns themselves.
      if (ex.notLeftOut.length) {
        throw new RefusedError(`${shownPath(ex.notLeftOut[0]!)} cannot be left out of a checkpoint (its path is too long to name to mksquashfs)`, {
          hint: 'run cairn save --full',
        });
      }
      lines.push(...ex.lines);
    }
  } finally {
    reach.close();
  }
  const excludeFile = join(tmp, 'exclude');
  await writeFile(excludeFile, Buffer.concat(lines));
  const included: Walk = { entries: new Map([...plan.include].flatMap((r) => (upper.entries.has(r) ? [[r, upper.entries.get(r)!]] : []))), leftOut: [], packed: [] };
  const args = [output, ...mksquashfsArgs(options.config), '-wildcards', '-ef', excludeFile];
  // squashfs keeps no POSIX ACLs: those of the entries the delta holds go into its record, as a state's do.
  args.push('-p', await aclPseudoFile(options.upperDir, join(tmp, 'acls'), included, true));
  await runMksquashfs(options.upperDir, args);
}

interface Verified {
  sha256: string;
  cksum: number;
  entries: number;
  space: number;
  directIo: boolean;
}

/**
 * Reads the delta back through a direct-I/O loop device and checks that
 * the parent with the delta applied is the upper layer as planned, looking
 * only where something changed, as the plan did:
 * - the removal list read back is the planned one;
 * - each entry of the squashfs part equals the upper layer's now
 *   (compare.ts: type, mode, owner, size, target, device, xattrs, ACLs, hard
 *   links, and the contents of its files);
 * - in each changed directory, the names left after the removals and the
 *   delta are the upper layer's as planned, and each is still there.
 * Everything else has a ctime older than the parent: it holds what the
 * parent holds (src/changes/baseline.ts). A file changed while the delta
 * was written fails the comparison, or is the next checkpoint's.
 */
async function verifyDelta(
  options: DeltaOptions,
  file: string,
  squashBytes: number,
  listBytes: number,
  plan: DeltaPlan,
  parent: ParentView,
  upper: Walk,
  since: number,
): Promise<Verified> {
  const size = squashBytes + listBytes;
  return withLoopDevice(file, { readOnly: true, directIo: true }, async (device) => {
    const directIo = loopUsesDirectIo(device);
    const checksum = sha256InWorker(device, size);
    const cksum = cksumTool(device, size, file);
    const listBack = readRange(device, squashBytes, listBytes);
    let removals: string[];
    try {
      removals = decodeRemovals(listBack);
    } catch (e) {
      throw new IntegrityError(file, `its removal list did not read back: ${(e as Error).message}`);
    }
    if (removals.join('\0') !== plan.removals.join('\0')) throw new IntegrityError(file, 'its removal list did not read back as written');
    const tree = withTempDir('cairn-delta-verify-', (mnt) =>
      withMount(device, mnt, { type: 'squashfs', options: ['ro'] }, async () => {
        const image = dropOwnRecords(walkTree(mnt));
        // The upper layer's entries the delta holds, as they are now.
        const inDelta: Walk = { entries: new Map(), leftOut: [], packed: [] };
        const reach = new TreeReach(options.upperDir);
        const gone: Difference[] = [];
        try {
          for (const rel of image.entries.keys()) {
            try {
              inDelta.entries.set(rel, entryAt(reach.path(rel)));
            } catch {
              gone.push(difference(rel, 'presence', 'present', 'removed while the checkpoint ran', true));
            }
          }
        } finally {
          reach.close();
        }
        const result = await compareTrees({ upper: inDelta, upperRoot: options.upperDir, imageRoot: mnt, since, maxDifferences: 50, scoped: true });
        const differences = [...gone, ...result.differences.filter((d) => d.what !== 'presence' || inDelta.entries.has(d.rel)), ...namesInChangedDirs(upper, image, parent, plan, options.upperDir, options.contentsSinceMs)];
        if (differences.length) throw new VerifyMismatchError(file, differences, 'checkpoint');
        let space = 0;
        for (const e of inDelta.entries.values()) space += e.allocated;
        return { entries: image.entries.size, space };
      }),
    );
    const [sha256, sum, counted] = await Promise.all([checksum, cksum, tree]);
    return { sha256, cksum: sum, ...counted, directIo };
  });
}

function difference(rel: string, what: string, expected: string, actual: string, changedDuringSave: boolean): Difference {
  return { path: displayPath(rel), rel, what, expected, actual, changedDuringSave };
}

/**
 * In each directory that changed since the parent (its ctime) and is not in
 * the delta whole: the parent's names less the removals, with the delta's,
 * against the upper layer's as planned. A name made since the plan that the
 * squash took is fine if it is still there; the next checkpoint compares it.
 */
function namesInChangedDirs(upper: Walk, image: Walk, parent: ParentView, plan: DeltaPlan, upperDir: string, since: number): Difference[] {
  const out: Difference[] = [];
  const removed = new Set(plan.removals);
  const kids = childrenIndex(upper.entries);
  const imageKids = childrenIndex(image.entries);
  const reach = new TreeReach(upperDir);
  const there = (rel: string) => {
    try {
      entryAt(reach.path(rel));
      return true;
    } catch {
      return false;
    }
  };
  try {
    for (const [dir, u] of upper.entries) {
      if (u.type !== 'dir' || u.ctimeMs < since || covers(removed, dir)) continue;
      const result = new Set<string>();
      for (const name of parent.children(dir)) {
        const rel = dir ? `${dir}/${name}` : name;
        if (!covers(removed, rel)) result.add(rel);
      }
      for (const rel of imageKids.get(dir) ?? []) result.add(rel);
      for (const rel of kids.get(dir) ?? []) {
        // Gone since the walk: removed while the checkpoint ran.
        if (!result.has(rel)) out.push(difference(rel, 'presence', 'present', 'missing from the parent and the delta', !there(rel)));
        result.delete(rel);
      }
      for (const rel of result) {
        if (!there(rel)) out.push(difference(rel, 'presence', 'absent', 'kept from the parent or the delta', !parent.entry(rel)));
      }
    }
  } finally {
    reach.close();
  }
  return out;
}
