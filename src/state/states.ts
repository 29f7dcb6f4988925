import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DATA, generationNumber } from '../names.js';
import { chainOf } from '../checkpoint/chain.js';
import { checkIntegrity, readSeal, type SealCheck } from './seal.js';

export type StateRole = 'newest' | 'backup' | 'generation';

/** One saved state on the data partition. */
export interface StateFile {
  role: StateRole;
  name: string;
  path: string;
  /** For generations: its number (larger is newer). */
  generation?: number;
  size: number;
  mtimeMs: number;
  ino: number;
  check: SealCheck;
  /**
   * For a checkpoint chain's tip (a delta under a state's name): its links'
   * files, the base first and the tip last (src/checkpoint/chain.ts), and
   * how many of them, from the base on, are on the data partition.
   */
  chain?: { files: string[]; present: number };
}

/** Whether a state is kept under NAME: the newest, the backup or an older generation. */
export function isStateName(name: string): boolean {
  return name === DATA.newest || name === DATA.backup || generationNumber(name) !== undefined;
}

/** The boot name the GRUB menu and the boot record use for a state. */
export function bootName(state: Pick<StateFile, 'role' | 'generation'>): string {
  return state.role === 'newest' ? 'default' : state.role === 'backup' ? 'backup' : `gen-${state.generation}`;
}

/** A state's identity: its seal id, or its inode when the seal is unreadable. */
export function identity(state: StateFile): string {
  return state.check.seal?.id || `ino:${state.ino}`;
}

/**
 * The states on a data partition, newest first, then backup, then
 * generations from newest to oldest. `full` reads every image to check its
 * checksum; otherwise only the seals are read.
 */
export async function listStates(dataDir: string, options: { full?: boolean } = {}): Promise<StateFile[]> {
  const names = await readdir(dataDir);
  const found: { role: StateRole; name: string; generation?: number }[] = [];
  if (names.includes(DATA.newest)) found.push({ role: 'newest', name: DATA.newest });
  if (names.includes(DATA.backup)) found.push({ role: 'backup', name: DATA.backup });
  const gens = names
    .map((name) => ({ name, generation: generationNumber(name) }))
    .filter((g): g is { name: string; generation: number } => g.generation !== undefined)
    .sort((a, b) => b.generation - a.generation);
  for (const g of gens) found.push({ role: 'generation', ...g });

  // Whatever holds a state's name is listed, a directory or a symbolic link
  // too (never followed), with a failed check: status shows it, no boot or
  // rotation uses it, and the save refuses to start until it is moved away.
  return Promise.all(found.map((f) => readStateFile(dataDir, f, options)));
}

/**
 * The links of checkpoint chains (src/checkpoint/chain.ts) as states: a
 * session may have booted one that no state's name holds (a chain cut short
 * at boot), and it becomes the backup as any state the session came from.
 */
export async function listLinks(dataDir: string): Promise<StateFile[]> {
  const names = await readdir(join(dataDir, DATA.checkpoints)).catch(() => [] as string[]);
  const links = names.filter((n) => n.endsWith(DATA.stateSuffix)).map((n) => ({ role: 'generation' as const, name: `${DATA.checkpoints}/${n}` }));
  return Promise.all(links.map((l) => readStateFile(dataDir, l, {})));
}

async function readStateFile(dataDir: string, f: { role: StateRole; name: string; generation?: number }, options: { full?: boolean }): Promise<StateFile> {
  const path = join(dataDir, f.name);
  const st = await lstat(path);
  let check = options.full ? await checkIntegrity(path, { deltas: true }) : await readSeal(path, { deltas: true });
  const chain = check.seal?.kind === 'delta' ? await chainOf(dataDir, path, check.seal) : undefined;
  if (check.ok && chain && chain.present === 0) {
    check = { ok: false, problem: `its checkpoint chain's base ${chain.files[0]!.slice(dataDir.length + 1)} is missing`, seal: check.seal, fileSize: check.fileSize };
  }
  return { ...f, path, size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, check, ...(chain ? { chain } : {}) };
}

/** The state a default boot would unpack: newest if intact, else the backup, else none. */
export function nextDefaultBoot(states: readonly StateFile[]): StateFile | undefined {
  return (
    states.find((s) => s.role === 'newest' && s.check.ok) ?? states.find((s) => s.role === 'backup' && s.check.ok)
  );
}
