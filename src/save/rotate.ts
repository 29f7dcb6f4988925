import { join } from 'node:path';
import { linkDurably, renameDurably, unlinkDurably } from '../lib/durable.js';
import { DATA, generationName } from '../names.js';
import { identity, type StateFile } from '../state/states.js';

/**
 * Rotation as a list of single durable operations, planned before any runs.
 *
 * Invariant, after every operation: the newest name holds a valid state and
 * the backup name holds a valid state (once two exist), each either the new
 * one or one that was there before. It holds because a name is only ever
 * replaced by rename(2) from a file that is already complete, and a state
 * that loses its last name is one the user has seen replaced.
 */
export type RotationOp =
  | { op: 'link'; from: string; to: string; why: string }
  | { op: 'rename'; from: string; to: string; why: string }
  | { op: 'unlink'; path: string; why: string };

export interface RotationInput {
  /** The states on the data partition now. */
  states: readonly StateFile[];
  /** The state this session booted from; undefined treats the newest as it. */
  fromId: string | undefined;
  /** This boot's session id when running in a booted system, else undefined. */
  session: string | undefined;
  /** Older generations to keep. */
  generations: number;
  /**
   * Identities of held states (src/state/held.ts): a boot fell back past
   * them, so no save drops or prunes them, and they do not count against
   * `generations`.
   */
  held?: ReadonlySet<string>;
  /** Checkpoint links (states.ts listLinks): where the state this session came from is found when no state's name holds it. */
  links?: readonly StateFile[];
}

export interface RotationPlan {
  ops: RotationOp[];
  /** The state that becomes the backup, if any. */
  backup?: StateFile;
  /** States kept as new older generations, with their new names. */
  kept: { state: StateFile; as: string }[];
  /** Generations removed because more than the configured number exist. */
  pruned: StateFile[];
  /** States that lose their last name, and why that is safe. */
  dropped: { state: StateFile; reason: string }[];
}

export function planRotation(input: RotationInput): RotationPlan {
  const { states } = input;
  const newest = states.find((s) => s.role === 'newest');
  const backup = states.find((s) => s.role === 'backup');
  const gens = states.filter((s) => s.role === 'generation');
  const from = resolveFrom(states, input.fromId, input.links);

  const ops: RotationOp[] = [];
  const kept: RotationPlan['kept'] = [];
  const dropped: RotationPlan['dropped'] = [];
  const keptIds = new Set(gens.map(identity));
  let nextGen = Math.max(0, ...gens.map((g) => g.generation ?? 0)) + 1;
  const ancestors = ancestorIds(from, states);

  // 1. Every state the new names displace, unless the user has seen it replaced,
  //    gets a generation name first, so that no later step can lose it. The
  //    older of the two gets the lower number: numbers order generations by age.
  const displacedStates = [backup, newest]
    .filter((d): d is StateFile => d !== undefined && !(from && identity(d) === identity(from)))
    .sort((x, y) => (x.check.seal?.created ?? 0) - (y.check.seal?.created ?? 0));
  for (const displaced of displacedStates) {
    const reason = input.held?.has(identity(displaced)) ? undefined : seenReplaced(displaced, from, ancestors, input.session);
    if (reason) {
      dropped.push({ state: displaced, reason });
      continue;
    }
    if (keptIds.has(identity(displaced))) continue;
    keptIds.add(identity(displaced));
    const as = generationName(nextGen++);
    kept.push({ state: displaced, as });
    ops.push({ op: 'link', from: displaced.name, to: as, why: `keep ${displaced.name} as an older state` });
  }

  // 2. The backup becomes the state this session booted from: a second name,
  //    renamed over the old backup, so the backup name never goes missing.
  if (from && !(backup && identity(backup) === identity(from))) {
    ops.push({ op: 'link', from: from.name, to: DATA.backupNext, why: `prepare ${from.name} as the backup` });
    ops.push({ op: 'rename', from: DATA.backupNext, to: DATA.backup, why: `${from.name} becomes the backup` });
  }

  // 3. The new state becomes the newest.
  ops.push({ op: 'rename', from: DATA.temp, to: DATA.newest, why: 'the new state becomes the newest' });

  // 4. A generation that now is the backup (booted from it, or linked by an
  //    interrupted save) needs no second name.
  const asBackup = gens.filter((g) => from && identity(g) === identity(from));
  for (const g of asBackup) ops.push({ op: 'unlink', path: g.name, why: `${g.name} is now the backup` });

  // 5. Prune the oldest generations past the configured number, oldest first.
  //    A state this save just kept is never pruned by the same save, and a
  //    held one never is.
  const older = gens
    .filter((g) => !asBackup.includes(g) && !input.held?.has(identity(g)))
    .sort((x, y) => (x.generation ?? 0) - (y.generation ?? 0));
  const newlyKept = kept.filter((k) => !input.held?.has(identity(k.state))).length;
  const excess = Math.max(0, older.length + newlyKept - Math.max(input.generations, newlyKept));
  const pruned = older.slice(0, excess);
  for (const g of pruned) {
    ops.push({ op: 'unlink', path: g.name, why: `prune ${g.name}: more than ${input.generations} older states` });
  }

  return { ops, backup: from, kept, pruned, dropped };
}

/**
 * The state a session came from: the one with the booted id, else (outside a
 * booted system, or after a clean boot) the newest intact state.
 */
export function resolveFrom(states: readonly StateFile[], fromId: string | undefined, links: readonly StateFile[] = []): StateFile | undefined {
  const intact = (s: StateFile | undefined) => (s?.check.ok ? s : undefined);
  return (
    (fromId ? states.find((s) => s.check.ok && s.check.seal.id === fromId) : undefined) ??
    (fromId ? links.find((s) => s.check.ok && s.check.seal.id === fromId) : undefined) ??
    intact(states.find((s) => s.role === 'newest')) ??
    intact(states.find((s) => s.role === 'backup'))
  );
}

/** Why a displaced state may lose its name, or undefined if it must be kept. */
function seenReplaced(
  state: StateFile,
  from: StateFile | undefined,
  ancestors: Set<string>,
  session: string | undefined,
): string | undefined {
  if (!state.check.ok) return undefined;
  const seal = state.check.seal;
  if (ancestors.has(seal.id)) return `${state.name} is an earlier state of the one this session booted from`;
  // A checkpoint of this session extends the state it came from through the links before it.
  if (session && from?.check.ok && seal.session === session && (seal.parent === from.check.seal.id || seal.chain?.includes(from.check.seal.id))) {
    return `${state.name} was saved earlier in this session`;
  }
  return undefined;
}

/** Ids of the states `from` descends from, as far as the seals on disk tell. */
function ancestorIds(from: StateFile | undefined, states: readonly StateFile[]): Set<string> {
  const byId = new Map(states.filter((s) => s.check.ok).map((s) => [s.check.seal!.id, s]));
  const out = new Set<string>(from?.check.seal?.chain ?? []);
  let parent = from?.check.seal?.parent;
  while (parent && !out.has(parent)) {
    out.add(parent);
    parent = byId.get(parent)?.check.seal?.parent;
  }
  return out;
}

export async function applyOp(dataDir: string, op: RotationOp): Promise<void> {
  switch (op.op) {
    case 'link':
      return linkDurably(join(dataDir, op.from), join(dataDir, op.to));
    case 'rename':
      return renameDurably(join(dataDir, op.from), join(dataDir, op.to));
    case 'unlink':
      return unlinkDurably(join(dataDir, op.path));
  }
}
