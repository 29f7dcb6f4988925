import { lstat, mkdir, readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fsyncDir, linkDurably, unlinkDurably } from '../lib/durable.js';
import { log } from '../lib/log.js';
import { checkpointLink, DATA } from '../names.js';
import { readSeal, type Seal } from '../state/seal.js';
import type { StateFile } from '../state/states.js';

/**
 * Checkpoint chains on the data partition (docs/state-format.md
 * "Checkpoint chains"): every link, the base too, is kept as
 * checkpoints/<id>.squashfs, and a state's name holding a delta is the tip
 * of a chain its seal names. The boot finds the links by id
 * (initramfs/lib/chain.sh).
 */

const exists = (path: string) =>
  lstat(path).then(
    (st) => st.isFile(),
    () => false,
  );

/** The files of the chain whose tip is TIP (sealed SEAL), the base first, and how many of them from the base on are there. */
export async function chainOf(dataDir: string, tip: string, seal: Seal): Promise<{ files: string[]; present: number }> {
  const files = [...(seal.chain ?? []).map((id) => join(dataDir, checkpointLink(id))), tip];
  let present = 0;
  while (present < files.length && (await exists(files[present]!))) present++;
  return { files, present };
}

/** The files a delta over STATE extends: its chain's, or the state alone when it is whole. */
export function linksOf(state: StateFile): string[] {
  return state.chain?.files ?? [state.path];
}

/** The ids of the links a delta over STATE names as its chain. */
export function chainIds(state: StateFile): string[] {
  const seal = state.check.seal!;
  return [...(seal.chain ?? []), seal.id];
}

/**
 * Gives every link of STATE's chain, the tip too, its name under
 * checkpoints/, so that a delta written over it finds them whatever names
 * the states have later. A second name of the same file: nothing is copied.
 */
export async function linkChain(dataDir: string, state: StateFile): Promise<void> {
  const ids = chainIds(state);
  const files = linksOf(state);
  await ensureDir(join(dataDir, DATA.checkpoints));
  for (const [k, id] of ids.entries()) {
    const name = join(dataDir, checkpointLink(id));
    if (await exists(name)) continue;
    await linkDurably(files[k]!, name);
  }
}

/** The links' directory, made durably: root's alone, like the states. */
async function ensureDir(dir: string): Promise<void> {
  if ((await mkdir(dir, { recursive: true, mode: 0o700 })) !== undefined) await fsyncDir(dirname(dir));
}

/**
 * Removes the links under checkpoints/ that no state's chain reaches any
 * more (after a rotation, or a save that merged a chain into a whole
 * state), and what an interrupted checkpoint left there. A link whose seal
 * cannot be read is kept: a state might still need it. Returns the names
 * removed.
 */
export async function collectLinks(dataDir: string, states: readonly StateFile[]): Promise<string[]> {
  const dir = join(dataDir, DATA.checkpoints);
  const names = await readdir(dir).catch(() => [] as string[]);
  if (names.length === 0) return [];
  const reached = new Set<string>();
  for (const s of states) {
    const seal = s.check.seal;
    if (seal?.kind === 'delta') for (const id of [...(seal.chain ?? []), seal.id]) reached.add(id);
  }
  const removed: string[] = [];
  for (const name of names) {
    const path = join(dir, name);
    const id = name.endsWith(DATA.stateSuffix) ? name.slice(0, -DATA.stateSuffix.length) : undefined;
    if (id && reached.has(id)) continue;
    if (id) {
      const check = await readSeal(path, { deltas: true }).catch(() => undefined);
      // A link named for another id than its seal's is not one this code wrote: left alone.
      if (!check?.seal || check.seal.id !== id) continue;
    }
    log.info({ link: name }, 'removing a checkpoint link no state reaches');
    await unlinkDurably(path);
    removed.push(`${DATA.checkpoints}/${name}`);
  }
  return removed;
}
