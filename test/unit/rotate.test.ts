import { describe, it, expect } from 'vitest';
import { planRotation, resolveFrom, type RotationOp, type RotationPlan } from '../../src/save/rotate.js';
import type { StateFile, StateRole } from '../../src/state/states.js';
import type { Seal, SealCheck } from '../../src/state/seal.js';
import { DATA, generationName, generationNumber } from '../../src/names.js';

/**
 * The data partition as a map of names to inodes, with POSIX semantics for
 * the three operations a rotation uses (as src/lib/durable.ts performs them):
 *   link:   linkDurably removes an existing target, then link(2); the source must exist
 *   rename: rename(2) replaces the target; when both are names of one inode
 *           rename(2) does nothing and renameDurably then drops the source name
 *   unlink: a missing name is not an error (unlinkDurably ignores ENOENT)
 */
interface Inode {
  id: string;
  parent: string;
  session: string;
  /** Whether the seal and checksum are good. */
  ok: boolean;
  /** Whether a (possibly wrong) seal can be read at all. */
  sealed: boolean;
  /** A checkpoint delta's chain: the ids of the links before it, the base first. */
  chain?: string[];
}

const NEW = 'NEW';
const gen = generationName;

class Disk {
  names = new Map<string, number>();
  inodes = new Map<number, Inode>();
  private nextIno = 100;

  clone(): Disk {
    const d = new Disk();
    d.names = new Map(this.names);
    d.inodes = new Map(this.inodes);
    d.nextIno = this.nextIno;
    return d;
  }

  /** A new file (new inode) under `name`. */
  put(name: string, state: { id: string; parent?: string; session?: string; ok?: boolean; sealed?: boolean; chain?: string[] }): number {
    const ino = this.nextIno++;
    this.inodes.set(ino, {
      id: state.id,
      parent: state.parent ?? '',
      session: state.session ?? '',
      ok: state.ok ?? true,
      sealed: state.sealed ?? true,
      ...(state.chain ? { chain: state.chain } : {}),
    });
    this.names.set(name, ino);
    return ino;
  }

  /** A second hard link, as a crashed save leaves one. */
  hardLink(existing: string, name: string): void {
    const ino = this.names.get(existing);
    if (ino === undefined) throw new Error(`no ${existing}`);
    this.names.set(name, ino);
  }

  idAt(name: string): string | undefined {
    const ino = this.names.get(name);
    return ino === undefined ? undefined : this.inodes.get(ino)!.id;
  }

  apply(op: RotationOp): void {
    switch (op.op) {
      case 'link': {
        const ino = this.names.get(op.from);
        if (ino === undefined) throw new Error(`link: ${op.from} does not exist (ENOENT)`);
        this.names.delete(op.to);
        this.names.set(op.to, ino);
        return;
      }
      case 'rename': {
        const ino = this.names.get(op.from);
        if (ino === undefined) throw new Error(`rename: ${op.from} does not exist (ENOENT)`);
        if (this.names.get(op.to) === ino) {
          this.names.delete(op.from);
          return;
        }
        this.names.set(op.to, ino);
        this.names.delete(op.from);
        return;
      }
      case 'unlink':
        this.names.delete(op.path);
        return;
    }
  }

  /** What listStates would return: newest, backup, then generations newest first. */
  states(): StateFile[] {
    const out: StateFile[] = [];
    const add = (role: StateRole, name: string, generation?: number) => {
      const ino = this.names.get(name)!;
      out.push(stateFile(role, name, ino, this.inodes.get(ino)!, generation));
    };
    if (this.names.has(DATA.newest)) add('newest', DATA.newest);
    if (this.names.has(DATA.backup)) add('backup', DATA.backup);
    const gens = [...this.names.keys()]
      .map((name) => ({ name, n: generationNumber(name) }))
      .filter((g): g is { name: string; n: number } => g.n !== undefined)
      .sort((a, b) => b.n - a.n);
    for (const g of gens) add('generation', g.name, g.n);
    return out;
  }

  /** Every name with the id of the state it holds. */
  layout(): Record<string, string> {
    return Object.fromEntries([...this.names.keys()].sort().map((n) => [n, this.idAt(n)!]));
  }

  /** Names that keep a state across the next save (the temp and `.next` are litter). */
  durableNamesOf(ino: number): string[] {
    return [...this.names.entries()]
      .filter(([name, i]) => i === ino && isStateName(name))
      .map(([name]) => name);
  }
}

function isStateName(name: string): boolean {
  return name === DATA.newest || name === DATA.backup || generationNumber(name) !== undefined;
}

function sameState(a: Inode, aIno: number, b: Inode, bIno: number): boolean {
  return aIno === bIno || (a.sealed && b.sealed && a.id !== '' && a.id === b.id);
}

function stateFile(role: StateRole, name: string, ino: number, s: Inode, generation?: number): StateFile {
  const seal: Seal = {
    size: 8192,
    sha256: 'ab'.repeat(32),
    id: s.id,
    parent: s.parent,
    session: s.session,
    created: 1_700_000_000,
    files: 42,
    space: 0,
    ...(s.chain ? { kind: 'delta' as const, removed: 0, chain: s.chain } : {}),
  };
  const check: SealCheck = s.ok
    ? { ok: true, seal, fileSize: 8192 + 4096 }
    : s.sealed
      ? { ok: false, problem: 'checksum mismatch: the image is corrupt', seal, fileSize: 8192 + 4096 }
      : { ok: false, problem: 'no cairn seal at the end (not a saved state, or truncated)', fileSize: 5000 };
  return { role, name, path: `/persist/${name}`, generation, size: check.fileSize, mtimeMs: 0, ino, check };
}

const describeOp = (op: RotationOp) => (op.op === 'unlink' ? `unlink ${op.path}` : `${op.op} ${op.from} -> ${op.to}`);

/**
 * Crash after each prefix of the ops and check what the next boot finds:
 * the newest name holds the new state or the old newest; the backup name is
 * there whenever it was before (or once the new state and another intact one
 * exist) and holds a state from before that boots; no state loses its last
 * name unless the plan says it was seen replaced or pruned.
 */
function checkEveryCrashPoint(before: Disk, plan: RotationPlan): void {
  const tempIno = before.names.get(DATA.temp)!;
  const newestBefore = before.names.get(DATA.newest);
  const backupBefore = before.names.get(DATA.backup);
  const preexisting = new Set([...before.names.entries()].filter(([n]) => isStateName(n)).map(([, i]) => i));
  const mayLose = new Set([...plan.dropped.map((d) => d.state.ino), ...plan.pruned.map((p) => p.ino)]);

  for (const d of plan.dropped) {
    expect(d.state.check.ok, `${d.state.name} is dropped but not intact`).toBe(true);
    expect(d.reason).toBeTruthy();
  }
  for (const op of plan.ops) {
    if (op.op === 'unlink') {
      expect(generationNumber(op.path), `${describeOp(op)} removes a name that is not an older generation`).toBeDefined();
    }
    if (op.op === 'link') {
      // linkDurably removes whatever the target names: it must not be a state.
      expect(op.to === DATA.backupNext || (generationNumber(op.to) !== undefined && !before.names.has(op.to)), describeOp(op)).toBe(
        true,
      );
    }
  }

  for (let k = 0; k <= plan.ops.length; k++) {
    const disk = before.clone();
    const done = plan.ops.slice(0, k);
    for (const op of done) disk.apply(op);
    const at = `crash after ${k}/${plan.ops.length} ops [${done.map(describeOp).join('; ')}]`;

    const newest = disk.names.get(DATA.newest);
    if (newestBefore !== undefined) expect(newest, `${at}: ${DATA.newest} is missing`).toBeDefined();
    if (newest !== undefined) {
      expect([tempIno, newestBefore], `${at}: ${DATA.newest} holds ${disk.idAt(DATA.newest)}`).toContain(newest);
    }

    const backup = disk.names.get(DATA.backup);
    const otherIntact = [...preexisting].filter((i) => disk.inodes.get(i)!.ok && disk.durableNamesOf(i).length > 0);
    if (backupBefore !== undefined || (newest === tempIno && otherIntact.length > 0)) {
      expect(backup, `${at}: ${DATA.backup} is missing`).toBeDefined();
    }
    if (backup !== undefined) {
      expect(backup, `${at}: the backup is the unsaved new state`).not.toBe(tempIno);
      expect(preexisting.has(backup), `${at}: the backup holds a state that was not there`).toBe(true);
      expect(backup === backupBefore || disk.inodes.get(backup)!.ok, `${at}: the backup holds a broken state`).toBe(true);
    }

    for (const ino of preexisting) {
      if (mayLose.has(ino)) continue;
      // A state is its content: a copy with the same seal id keeps it too.
      const holders = [...disk.names.entries()].filter(
        ([name, i]) => isStateName(name) && sameState(disk.inodes.get(i)!, i, before.inodes.get(ino)!, ino),
      );
      expect(holders, `${at}: ${before.inodes.get(ino)!.id || `inode ${ino}`} lost its last name`).not.toEqual([]);
    }
    expect(
      [...disk.names.values()].includes(tempIno),
      `${at}: the new state lost its last name`,
    ).toBe(true);
  }
}

interface SaveInput {
  fromId?: string;
  session?: string;
  generations?: number;
  newId?: string;
  /** Seal ids of held states. */
  held?: string[];
  /** The new state is a checkpoint delta extending these links (its parent the last). */
  newChain?: string[];
}

/** One save as the pipeline runs it: a sealed temp image, a plan, its ops applied. */
function save(start: Disk, input: SaveInput = {}) {
  const before = start.clone();
  const from = resolveFrom(before.states(), input.fromId);
  const newIno = before.put(DATA.temp, {
    id: input.newId ?? NEW,
    parent: input.newChain?.at(-1) ?? from?.check.seal?.id ?? '',
    session: input.session ?? '',
    ...(input.newChain ? { chain: input.newChain } : {}),
  });
  const rotation = {
    states: before.states(),
    fromId: input.fromId,
    session: input.session,
    generations: input.generations ?? 2,
    held: new Set(input.held ?? []),
  };
  const plan = planRotation(rotation);
  checkEveryCrashPoint(before, plan);
  const after = before.clone();
  for (const op of plan.ops) after.apply(op);
  return { before, plan, after, newIno, rotation };
}

const ids = (states: readonly { check: SealCheck }[]) => states.map((s) => s.check.seal?.id);

/** Newest N2 saved from backup B1 in an earlier session. */
function twoStates(): Disk {
  const d = new Disk();
  d.put(DATA.backup, { id: 'B1', parent: 'B0', session: 'boot-1' });
  d.put(DATA.newest, { id: 'N2', parent: 'B1', session: 'boot-2' });
  return d;
}

describe('planRotation', () => {
  it('first save ever: the new state becomes the newest, nothing else happens', () => {
    const { plan, after } = save(new Disk(), { session: 'boot-1' });
    expect(plan.ops).toEqual([expect.objectContaining({ op: 'rename', from: DATA.temp, to: DATA.newest })]);
    expect(after.layout()).toEqual({ [DATA.newest]: NEW });
    expect(plan.backup).toBeUndefined();
    expect(plan).toMatchObject({ kept: [], pruned: [], dropped: [] });
  });

  it('second save: the first state becomes the backup', () => {
    const d = new Disk();
    d.put(DATA.newest, { id: 'N1', session: 'boot-1' });
    const { plan, after } = save(d, { fromId: 'N1', session: 'boot-2' });
    expect(after.layout()).toEqual({ [DATA.newest]: NEW, [DATA.backup]: 'N1' });
    expect(plan.backup?.check.seal?.id).toBe('N1');
    expect(plan).toMatchObject({ kept: [], pruned: [], dropped: [] });
  });

  it('default boot: the old newest becomes the backup and the old backup (its parent) is dropped', () => {
    const { plan, after } = save(twoStates(), { fromId: 'N2', session: 'boot-3' });
    expect(after.layout()).toEqual({ [DATA.newest]: NEW, [DATA.backup]: 'N2' });
    expect(ids(plan.dropped.map((d) => d.state))).toEqual(['B1']);
    expect(plan.dropped[0]!.reason).toMatch(/earlier state/);
    expect(plan.kept).toEqual([]);
    expect(plan.backup?.check.seal?.id).toBe('N2');
  });

  it('backup boot: the backup stays and the newest is kept as upperfs-gen-1', () => {
    const { plan, after } = save(twoStates(), { fromId: 'B1', session: 'boot-3' });
    expect(after.layout()).toEqual({ [DATA.newest]: NEW, [DATA.backup]: 'B1', [gen(1)]: 'N2' });
    expect(plan.kept.map((k) => [k.state.check.seal?.id, k.as])).toEqual([['N2', gen(1)]]);
    expect(plan.dropped).toEqual([]);
    expect(plan.backup?.check.seal?.id).toBe('B1');
    // The backup is not touched at all: no second name, no rename over it.
    expect(plan.ops.some((op) => op.op !== 'unlink' && op.to === DATA.backup)).toBe(false);
  });

  it('backup boot, second save in the same session: the first save is replaced, no new generation', () => {
    const first = save(twoStates(), { fromId: 'B1', session: 'boot-3' }).after;
    const { plan, after } = save(first, { fromId: 'B1', session: 'boot-3', newId: 'NEW2' });
    expect(after.layout()).toEqual({ [DATA.newest]: 'NEW2', [DATA.backup]: 'B1', [gen(1)]: 'N2' });
    expect(ids(plan.dropped.map((d) => d.state))).toEqual([NEW]);
    expect(plan.dropped[0]!.reason).toMatch(/this session/);
    expect(plan.kept).toEqual([]);
    expect(plan.ops.filter((op) => op.op === 'link')).toEqual([]);
  });

  it('backup boot again in a later session: the earlier save is kept, not replaced', () => {
    const first = save(twoStates(), { fromId: 'B1', session: 'boot-3' }).after;
    const { plan, after } = save(first, { fromId: 'B1', session: 'boot-4', newId: 'NEW2' });
    expect(after.layout()).toEqual({ [DATA.newest]: 'NEW2', [DATA.backup]: 'B1', [gen(1)]: 'N2', [gen(2)]: NEW });
    expect(plan.dropped).toEqual([]);
  });

  it('outside a booted system (no session) an earlier save is never taken as this session\'s', () => {
    const first = save(twoStates(), { fromId: 'B1', session: undefined }).after;
    const { after } = save(first, { fromId: 'B1', session: undefined, newId: 'NEW2' });
    expect(after.layout()).toEqual({ [DATA.newest]: 'NEW2', [DATA.backup]: 'B1', [gen(1)]: 'N2', [gen(2)]: NEW });
  });

  it('default boot, second save in the same session: the first save is replaced, the backup stays', () => {
    const first = save(twoStates(), { fromId: 'N2', session: 'boot-3' }).after;
    const { plan, after } = save(first, { fromId: 'N2', session: 'boot-3', newId: 'NEW2' });
    expect(after.layout()).toEqual({ [DATA.newest]: 'NEW2', [DATA.backup]: 'N2' });
    expect(ids(plan.dropped.map((d) => d.state))).toEqual([NEW]);
    expect(plan.kept).toEqual([]);
  });

  describe('checkpoint chains', () => {
    it('a third checkpoint of the session replaces the second, which extends the booted state through the first', () => {
      const d = twoStates();
      d.put(DATA.newest, { id: 'C2', parent: 'C1', session: 'boot-3', chain: ['N2', 'C1'] });
      d.put(DATA.backup, { id: 'N2', parent: 'B1', session: 'boot-2' });
      const { plan, after } = save(d, { fromId: 'N2', session: 'boot-3', newId: 'C3', newChain: ['N2', 'C1', 'C2'] });
      expect(after.layout()).toEqual({ [DATA.newest]: 'C3', [DATA.backup]: 'N2' });
      expect(ids(plan.dropped.map((x) => x.state))).toEqual(['C2']);
      expect(plan.dropped[0]!.reason).toMatch(/this session/);
    });

    it('a checkpoint of a later session keeps the tip it did not boot as an older state', () => {
      const d = twoStates();
      d.put(DATA.newest, { id: 'C2', parent: 'C1', session: 'boot-3', chain: ['N2', 'C1'] });
      d.put(DATA.backup, { id: 'N2', parent: 'B1', session: 'boot-2' });
      const { after } = save(d, { fromId: 'N2', session: 'boot-4', newId: 'D1', newChain: ['N2'] });
      expect(after.layout()).toEqual({ [DATA.newest]: 'D1', [DATA.backup]: 'N2', [gen(1)]: 'C2' });
    });

    it('a session booted from a tip drops the chain\'s base under the backup name: an earlier state of the one it booted', () => {
      const d = new Disk();
      d.put(DATA.backup, { id: 'B', parent: '', session: 'boot-1' });
      d.put(DATA.newest, { id: 'C2', parent: 'C1', session: 'boot-2', chain: ['B', 'C1'] });
      const { plan, after } = save(d, { fromId: 'C2', session: 'boot-3', newId: 'C3', newChain: ['B', 'C1', 'C2'] });
      expect(after.layout()).toEqual({ [DATA.newest]: 'C3', [DATA.backup]: 'C2' });
      expect(plan.dropped[0]!.reason).toMatch(/earlier state of the one this session booted from/);
    });
  });

  describe('boot from an older generation (gen-3)', () => {
    function withGenerations(): Disk {
      const d = new Disk();
      d.put(gen(1), { id: 'G1', session: 'boot-1' });
      d.put(gen(2), { id: 'G2', parent: 'G1', session: 'boot-2' });
      d.put(gen(3), { id: 'G3', parent: 'G2', session: 'boot-3' });
      d.put(DATA.backup, { id: 'B', parent: 'G3', session: 'boot-4' });
      d.put(DATA.newest, { id: 'N', parent: 'B', session: 'boot-5' });
      return d;
    }

    it('gen-3 becomes the backup, its gen-3 name goes, the displaced newest and backup are kept', () => {
      const { plan, after } = save(withGenerations(), { fromId: 'G3', session: 'boot-6', generations: 5 });
      expect(after.idAt(DATA.newest)).toBe(NEW);
      expect(after.idAt(DATA.backup)).toBe('G3');
      expect(after.names.has(gen(3))).toBe(false);
      expect(after.durableNamesOf(after.names.get(DATA.backup)!)).toEqual([DATA.backup]);
      // Displaced, not seen replaced: each keeps a generation name, numbered past the existing ones.
      for (const id of ['N', 'B']) {
        const names = Object.entries(after.layout()).filter(([, v]) => v === id).map(([n]) => n);
        expect(names, `${id} is kept`).toHaveLength(1);
        expect(generationNumber(names[0]!)).toBeGreaterThan(3);
      }
      expect(after.idAt(gen(1))).toBe('G1');
      expect(after.idAt(gen(2))).toBe('G2');
      expect(plan.dropped).toEqual([]);
      expect(plan.pruned).toEqual([]);
      expect(plan.backup?.check.seal?.id).toBe('G3');
    });

    it('with the default of 2 generations the two kept states survive and the oldest go', () => {
      const { plan, after } = save(withGenerations(), { fromId: 'G3', session: 'boot-6', generations: 2 });
      const kept = Object.values(after.layout()).sort();
      expect(kept).toEqual(['B', 'G3', 'N', NEW].sort());
      expect(ids(plan.pruned).sort()).toEqual(['G1', 'G2']);
    });
  });

  describe('a corrupt newest after a fallback boot', () => {
    it('is kept as a generation, never dropped (checksum mismatch)', () => {
      const d = new Disk();
      d.put(DATA.backup, { id: 'B1', session: 'boot-1' });
      d.put(DATA.newest, { id: 'N2', parent: 'B1', session: 'boot-2', ok: false });
      const { plan, after } = save(d, { fromId: 'B1', session: 'boot-3' });
      expect(after.layout()).toEqual({ [DATA.newest]: NEW, [DATA.backup]: 'B1', [gen(1)]: 'N2' });
      expect(plan.dropped).toEqual([]);
      expect(plan.backup?.check.seal?.id).toBe('B1');
    });

    it('is kept even when its (unverified) seal claims it was saved earlier in this session', () => {
      const d = new Disk();
      d.put(DATA.backup, { id: 'B1', session: 'boot-1' });
      d.put(DATA.newest, { id: 'N2', parent: 'B1', session: 'boot-3', ok: false });
      const { plan, after } = save(d, { fromId: 'B1', session: 'boot-3' });
      expect(after.idAt(gen(1))).toBe('N2');
      expect(plan.dropped).toEqual([]);
    });

    it('is kept when it has no readable seal at all', () => {
      const d = new Disk();
      d.put(DATA.backup, { id: 'B1', session: 'boot-1' });
      const bad = d.put(DATA.newest, { id: '', ok: false, sealed: false });
      const { plan, after } = save(d, { fromId: 'B1', session: 'boot-3' });
      expect(after.names.get(gen(1))).toBe(bad);
      expect(after.idAt(DATA.backup)).toBe('B1');
      expect(plan.dropped).toEqual([]);
    });

    it('is kept, and the backup stays, when no booted state is known', () => {
      const d = new Disk();
      d.put(DATA.backup, { id: 'B1', session: 'boot-1' });
      d.put(DATA.newest, { id: 'N2', parent: 'B1', session: 'boot-2', ok: false });
      const { after } = save(d, { fromId: undefined, session: undefined });
      expect(after.layout()).toEqual({ [DATA.newest]: NEW, [DATA.backup]: 'B1', [gen(1)]: 'N2' });
    });
  });

  describe('states a boot fell back past (held)', () => {
    it('a session that fell back to clean past both states keeps both through any number of later saves', () => {
      // Neither state fitted: the clean session's saves must not cost them.
      const held = ['N2', 'B1'];
      let d = save(twoStates(), { fromId: undefined, session: 'boot-3', generations: 0, held }).after;
      for (let i = 4; i < 8; i++) {
        d = save(d, { fromId: d.idAt(DATA.newest), session: `boot-${i}`, generations: 0, held, newId: `S${i}` }).after;
      }
      const kept = Object.values(d.layout());
      expect(kept).toContain('N2');
      expect(kept).toContain('B1');
    });

    it('without the hold the same saves drop them (what a fallback session did before)', () => {
      let d = save(twoStates(), { fromId: undefined, session: 'boot-3', generations: 0 }).after;
      d = save(d, { fromId: d.idAt(DATA.newest), session: 'boot-4', generations: 0, newId: 'S4' }).after;
      expect(Object.values(d.layout())).not.toContain('B1');
    });

    it('a held generation is not pruned and does not count against the configured number', () => {
      const d = new Disk();
      d.put(gen(1), { id: 'G1', session: 'old-1' });
      d.put(gen(2), { id: 'G2', session: 'old-2' });
      d.put(DATA.backup, { id: 'B1', session: 'boot-1' });
      d.put(DATA.newest, { id: 'N2', parent: 'B1', session: 'boot-2' });
      const { plan, after } = save(d, { fromId: 'B1', session: 'boot-3', generations: 1, held: ['G1'] });
      expect(ids(plan.pruned)).toEqual(['G2']);
      expect(after.idAt(gen(1))).toBe('G1');
      expect(after.idAt(gen(3))).toBe('N2');
    });
  });

  describe('pruning', () => {
    function gensAnd(n: number): Disk {
      const d = new Disk();
      for (let i = 1; i <= n; i++) d.put(gen(i), { id: `G${i}`, session: `old-${i}` });
      d.put(DATA.backup, { id: 'B1', session: 'boot-1' });
      d.put(DATA.newest, { id: 'N2', parent: 'B1', session: 'boot-2' });
      return d;
    }
    const genNames = (d: Disk) => [...d.names.keys()].filter((n) => generationNumber(n) !== undefined).sort();

    it('generations=1, two existing plus one new: the two oldest go, the new one stays', () => {
      const { plan, after } = save(gensAnd(2), { fromId: 'B1', session: 'boot-3', generations: 1 });
      expect(genNames(after)).toEqual([gen(3)]);
      expect(after.idAt(gen(3))).toBe('N2');
      expect(ids(plan.pruned).sort()).toEqual(['G1', 'G2']);
      expect(after.layout()).toEqual({ [DATA.newest]: NEW, [DATA.backup]: 'B1', [gen(3)]: 'N2' });
    });

    it('generations=2, three existing plus one new: the lowest numbers go first', () => {
      const { plan, after } = save(gensAnd(3), { fromId: 'B1', session: 'boot-3', generations: 2 });
      expect(genNames(after)).toEqual([gen(3), gen(4)]);
      expect(after.idAt(gen(3))).toBe('G3');
      expect(after.idAt(gen(4))).toBe('N2');
      expect(ids(plan.pruned).sort()).toEqual(['G1', 'G2']);
    });

    it('prunes past the count even when the save keeps no new generation', () => {
      const { plan, after } = save(gensAnd(3), { fromId: 'N2', session: 'boot-3', generations: 2 });
      expect(genNames(after)).toEqual([gen(2), gen(3)]);
      expect(ids(plan.pruned)).toEqual(['G1']);
    });

    it('prunes nothing at or under the count', () => {
      const { plan, after } = save(gensAnd(2), { fromId: 'N2', session: 'boot-3', generations: 2 });
      expect(plan.pruned).toEqual([]);
      expect(genNames(after)).toEqual([gen(1), gen(2)]);
    });
  });

  describe('a leftover generation from a crashed save', () => {
    it('with the same inode as the newest is not linked twice', () => {
      const d = twoStates();
      d.hardLink(DATA.newest, gen(1));
      const { plan, after } = save(d, { fromId: 'B1', session: 'boot-3' });
      expect(plan.ops.filter((op) => op.op === 'link')).toEqual([]);
      expect(plan.kept).toEqual([]);
      expect(after.layout()).toEqual({ [DATA.newest]: NEW, [DATA.backup]: 'B1', [gen(1)]: 'N2' });
    });

    it('with the same id as the newest (another file) is not linked twice', () => {
      const d = twoStates();
      d.put(gen(1), { id: 'N2', parent: 'B1', session: 'boot-2' });
      const { plan, after } = save(d, { fromId: 'B1', session: 'boot-3' });
      expect(plan.kept).toEqual([]);
      expect(Object.keys(after.layout()).filter((n) => generationNumber(n) !== undefined)).toEqual([gen(1)]);
    });
  });

  it('clean boot (no booted state): the newest becomes the backup', () => {
    const { plan, after } = save(twoStates(), { fromId: undefined, session: 'boot-3' });
    expect(after.idAt(DATA.newest)).toBe(NEW);
    expect(after.idAt(DATA.backup)).toBe('N2');
    expect(plan.backup?.check.seal?.id).toBe('N2');
  });

  it('a booted id that no longer exists falls back to the newest', () => {
    const { after } = save(twoStates(), { fromId: 'gone', session: 'boot-3' });
    expect(after.layout()).toEqual({ [DATA.newest]: NEW, [DATA.backup]: 'N2' });
  });

  describe('a save killed at any point and run again in the same session', () => {
    const cases: [string, () => Disk, SaveInput][] = [
      ['second save', () => {
        const d = new Disk();
        d.put(DATA.newest, { id: 'N1', session: 'boot-1' });
        return d;
      }, { fromId: 'N1', session: 'boot-2' }],
      ['default boot', twoStates, { fromId: 'N2', session: 'boot-3' }],
      ['backup boot', twoStates, { fromId: 'B1', session: 'boot-3' }],
      ['corrupt newest', () => {
        const d = new Disk();
        d.put(DATA.backup, { id: 'B1', session: 'boot-1' });
        d.put(DATA.newest, { id: 'N2', parent: 'B1', session: 'boot-2', ok: false });
        return d;
      }, { fromId: 'B1', session: 'boot-3' }],
    ];
    for (const [name, setup, input] of cases) {
      it(`${name}: ends with the same newest, backup and kept states`, () => {
        const whole = save(setup(), input);
        const final = (d: Disk) => ({
          newest: d.idAt(DATA.newest) === 'NEW2' ? NEW : d.idAt(DATA.newest),
          backup: d.idAt(DATA.backup),
          generations: [...d.names.keys()].filter((n) => generationNumber(n) !== undefined).map((n) => d.idAt(n)).sort(),
        });
        for (let k = 0; k < whole.plan.ops.length; k++) {
          const crashed = whole.before.clone();
          for (const op of whole.plan.ops.slice(0, k)) crashed.apply(op);
          // The next save removes the leftover temp image and `.next` name first.
          crashed.names.delete(DATA.temp);
          crashed.names.delete(DATA.backupNext);
          const again = save(crashed, { ...input, newId: 'NEW2' });
          expect(final(again.after), `killed after ${k} ops`).toEqual(final(whole.after));
        }
      });
    }
  });
});

describe('resolveFrom', () => {
  const disk = () => {
    const d = twoStates();
    d.put(gen(1), { id: 'G1', session: 'boot-0' });
    return d;
  };

  it('finds the booted state by seal id, whatever its name', () => {
    const states = disk().states();
    expect(resolveFrom(states, 'N2')?.name).toBe(DATA.newest);
    expect(resolveFrom(states, 'B1')?.name).toBe(DATA.backup);
    expect(resolveFrom(states, 'G1')?.name).toBe(gen(1));
  });

  it('takes the newest when no id is given, the id is empty or unknown', () => {
    const states = disk().states();
    expect(resolveFrom(states, undefined)?.name).toBe(DATA.newest);
    expect(resolveFrom(states, '')?.name).toBe(DATA.newest);
    expect(resolveFrom(states, 'nope')?.name).toBe(DATA.newest);
  });

  it('never returns a state that is not intact', () => {
    const d = new Disk();
    d.put(DATA.backup, { id: 'B1' });
    d.put(DATA.newest, { id: 'N2', parent: 'B1', ok: false });
    const states = d.states();
    expect(resolveFrom(states, 'N2')?.name).toBe(DATA.backup);
    expect(resolveFrom(states, undefined)?.name).toBe(DATA.backup);
  });

  it('returns undefined when nothing intact exists', () => {
    const d = new Disk();
    d.put(DATA.backup, { id: 'B1', ok: false });
    d.put(DATA.newest, { id: 'N2', ok: false, sealed: false });
    expect(resolveFrom(d.states(), undefined)).toBeUndefined();
    expect(resolveFrom([], 'N2')).toBeUndefined();
  });

  it('finds a booted generation when newest and backup are gone', () => {
    const d = new Disk();
    d.put(gen(2), { id: 'G2' });
    expect(resolveFrom(d.states(), 'G2')?.name).toBe(gen(2));
  });
});

describe('generation numbers and pruning', () => {
  /** Newest N (from backup B), backup B (from G3), and G3 kept as upperfs-gen-3. */
  const fromGeneration = () => {
    const d = new Disk();
    d.put(gen(3), { id: 'G3', parent: 'G2', session: 'boot-1' });
    d.put(DATA.backup, { id: 'B', parent: 'G3', session: 'boot-2' });
    d.put(DATA.newest, { id: 'N', parent: 'B', session: 'boot-3' });
    return d;
  };

  it('the newer of two displaced states gets the larger number, and a state kept by a save is not pruned by it', () => {
    const { after } = save(fromGeneration(), { fromId: 'G3', session: 'boot-4', generations: 1 });
    expect(after.idAt(gen(4))).toBe('B');
    expect(after.idAt(gen(5))).toBe('N');
    expect(after.idAt(DATA.backup)).toBe('G3');
    expect(after.idAt(DATA.newest)).toBe(NEW);
  });

  it('a generation already linked as the backup by an interrupted save is removed, not counted', () => {
    const d = new Disk();
    d.put(gen(1), { id: 'G1', session: 'boot-0' });
    d.put(gen(3), { id: 'G3', parent: 'G1', session: 'boot-1' });
    d.hardLink(gen(3), DATA.backup);
    d.put(DATA.newest, { id: 'N', parent: 'B', session: 'boot-3' });
    d.hardLink(DATA.newest, gen(4));
    const { plan, after } = save(d, { fromId: 'G3', session: 'boot-4', generations: 3 });
    expect(plan.ops.map(describeOp)).toContain(`unlink ${gen(3)}`);
    expect(plan.pruned).toEqual([]);
    expect(after.idAt(gen(1))).toBe('G1');
    expect(after.idAt(gen(4))).toBe('N');
    expect(after.idAt(gen(3))).toBeUndefined();
  });

  it('prunes in ascending order, so a crash between two removals keeps the newer generation', () => {
    const d = twoStates();
    for (const n of [1, 2, 3]) d.put(gen(n), { id: `G${n}`, session: 'boot-0' });
    const { plan } = save(d, { fromId: 'B1', session: 'boot-9', generations: 1 });
    const unlinks = plan.ops.filter((o) => o.op === 'unlink').map(describeOp);
    expect(unlinks).toEqual([`unlink ${gen(1)}`, `unlink ${gen(2)}`, `unlink ${gen(3)}`]);
  });
});
