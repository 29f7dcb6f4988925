import type { Context } from '../context.js';
import { PathError } from '../lib/errors.js';
import { formatBytes } from '../lib/format.js';
import { withLoopDevice, withMount, withTempDir } from '../lib/resources.js';
import { compileExcludes } from '../save/exclude.js';
import { linksOf } from '../checkpoint/chain.js';
import { withChainView } from '../checkpoint/parent.js';
import { listLinks, listStates } from '../state/states.js';
import { resolveBaseline, type Baseline } from './baseline.js';
import { computeChainChanges, computeChanges, type ChangeSet } from './changes.js';

export interface Unsaved extends ChangeSet {
  baseline: Baseline;
  /** The state file compared with, on the data partition; undefined when there is none. */
  baselineImage: string | undefined;
}

/**
 * What a save would store that the baseline state (baseline.ts) does not
 * hold. The state is mounted read-only through a loop device, as the save's
 * verification mounts it: walking it reads only its directory and inode
 * tables, and only files changed since the baseline's moment are read.
 */
export async function gatherUnsaved(ctx: Pick<Context, 'upperDir' | 'dataDir' | 'runDir' | 'bootRecord' | 'config'>, lowerDir?: string): Promise<Unsaved> {
  const states = await listStates(ctx.dataDir);
  const newest = states.find((s) => s.role === 'newest' && s.check.ok);
  const baseline = resolveBaseline(ctx.runDir, ctx.bootRecord, newest?.check.seal?.id);
  const common = { upperRoot: ctx.upperDir, contentsSinceMs: baseline.contentsSinceMs, exclude: compileExcludes(ctx.config.excludes), lowerRoot: lowerDir };
  if (!baseline.stateId) {
    return { ...(await computeChanges({ ...common, baselineRoot: undefined })), baseline, baselineImage: undefined };
  }
  // The state a chain cut short at boot ended with has no state's name: its link has.
  const state = [...states, ...(await listLinks(ctx.dataDir))].find((s) => s.check.seal?.id === baseline.stateId);
  if (!state) {
    throw new PathError(
      ctx.dataDir,
      `the state of ${baseline.label} (seal id ${baseline.stateId}) is no longer on the data partition, so what is unsaved cannot be told`,
      'cairn save stores the session as it is and makes that the baseline',
    );
  }
  if (state.check.seal?.kind === 'delta') {
    const chain = await withChainView(linksOf(state), (parent) => computeChainChanges({ ...common, parent }));
    return { ...chain, baseline, baselineImage: state.path };
  }
  const changes = await withLoopDevice(state.path, { readOnly: true }, (device) =>
    withTempDir('cairn-diff-', (mnt) =>
      withMount(device, mnt, { type: 'squashfs', options: ['ro'] }, () => computeChanges({ ...common, baselineRoot: mnt })),
    ),
  );
  return { ...changes, baseline, baselineImage: state.path };
}

/** The line `cairn status` and `cairn diff` print. */
export function unsavedSummary(u: Pick<Unsaved, 'baseline' | 'added' | 'changed' | 'removed' | 'bytes'>): string {
  return `changed since ${u.baseline.label}: ${u.added} added, ${u.changed} changed, ${u.removed} removed, ${formatBytes(u.bytes)}`;
}
