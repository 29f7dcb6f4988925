import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { unlinkDurably, writeFileDurably } from '../lib/durable.js';
import { UsageError } from '../lib/errors.js';
import { DATA } from '../names.js';
import { bootName, identity, listStates, type StateFile } from './states.js';

/**
 * States a session could not boot (it fell back past them) are held: no save
 * drops or prunes them until the user has booted one or released it
 * (`cairn release`). The list lives on the data partition, so the hold
 * outlasts the session that fell back, and is written before any rotation.
 */
export interface HeldState {
  /** The state's identity (states.ts identity): its seal id, or ino:<inode>. */
  identity: string;
  /** Why it was held, as the boot said it. */
  reason: string;
}

export interface HoldList {
  held: HeldState[];
  /**
   * The boot session whose passed-over states were taken into the list: its
   * later saves do not take them again, so a release within that session
   * stays released.
   */
  taken: string;
}

const TAKEN = '#taken\t';

/**
 * One state per line: identity, a tab, the reason; a first line
 * "#taken<tab><session>". Missing file: none held.
 */
export async function readHoldList(dataDir: string): Promise<HoldList> {
  const text = await readFile(join(dataDir, DATA.held), 'utf8').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return '';
    throw e;
  });
  const out: HoldList = { held: [], taken: '' };
  for (const line of text.split('\n')) {
    if (line.startsWith(TAKEN)) out.taken = line.slice(TAKEN.length).trim();
    if (line.startsWith('#')) continue;
    const tab = line.indexOf('\t');
    const id = (tab < 0 ? line : line.slice(0, tab)).trim();
    if (id && !out.held.some((h) => h.identity === id)) out.held.push({ identity: id, reason: tab < 0 ? '' : line.slice(tab + 1).trim() });
  }
  return out;
}

export async function readHeld(dataDir: string): Promise<HeldState[]> {
  return (await readHoldList(dataDir)).held;
}

/**
 * Writes the list durably; nothing to say removes the file. Readable by all
 * (the login notice counts its states): it names states and reasons, nothing
 * of their contents.
 */
export async function writeHeld(dataDir: string, held: readonly HeldState[], taken = ''): Promise<void> {
  const path = join(dataDir, DATA.held);
  if (!held.length && !taken) {
    await unlinkDurably(path).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
    await rm(`${path}.tmp`, { force: true });
    return;
  }
  const clean = (s: string) => s.replace(/[\t\n]/g, ' ');
  const lines = [...(taken ? [`${TAKEN}${clean(taken)}`] : []), ...held.map((h) => `${clean(h.identity)}\t${clean(h.reason)}`)];
  await writeFileDurably(path, lines.map((l) => `${l}\n`).join(''), 0o644);
}

/**
 * The hold after a save begins: what was held, plus the states this boot
 * passed over, less those no longer on the partition and the one this
 * session booted (the user has seen it).
 */
export function nextHeld(
  before: readonly HeldState[],
  skipped: readonly string[],
  reason: string,
  states: readonly StateFile[],
  bootedId: string | undefined,
): HeldState[] {
  const present = new Set(states.map(identity));
  const out = before.filter((h) => present.has(h.identity) && h.identity !== bootedId);
  for (const id of skipped) {
    if (present.has(id) && id !== bootedId && !out.some((h) => h.identity === id)) out.push({ identity: id, reason });
  }
  return out;
}

/**
 * The first thing a save does with the hold, before any rotation: add the
 * states this boot passed over (the boot record's `skipped`) and write the
 * list down if it changed. Returns the hold the rotation must respect.
 */
export async function holdSkippedStates(
  dataDir: string,
  states: readonly StateFile[],
  record: { skipped: string[]; fallback: string; used: string; stateId: string; session: string } | undefined,
): Promise<HeldState[]> {
  const before = await readHoldList(dataDir);
  const booted = record && record.used !== 'clean' ? record.stateId : undefined;
  // Only the first save of a session takes its passed-over states in: a
  // release later in the same session must stay a release.
  const take = record !== undefined && record.skipped.length > 0 && !(record.session && before.taken === record.session);
  const skipped = take ? record.skipped : [];
  const after = nextHeld(before.held, skipped, `a boot fell back past it: ${record?.fallback ?? ''}`, states, booted);
  // The mark matters only within its session; a later one drops it.
  const taken = take ? record.session : record?.session && before.taken === record.session ? before.taken : '';
  const same = taken === before.taken && after.length === before.held.length && after.every((h, i) => h.identity === before.held[i]!.identity);
  if (!same) await writeHeld(dataDir, after, taken);
  return after;
}

/** A held state's current name, for messages: its boot name in the menu, or its identity when gone. */
export function heldName(h: HeldState, states: readonly StateFile[]): string {
  const s = states.find((x) => identity(x) === h.identity);
  return s ? s.name : h.identity;
}

/**
 * `cairn release`: stop holding the states named (by boot name, gen-3, or
 * file name), or all of them. A name that is not held is an error, so a typo
 * never passes for a release. Returns the names released.
 */
export async function releaseHeld(dataDir: string, which: { names: readonly string[] } | { all: true }): Promise<string[]> {
  const { held, taken } = await readHoldList(dataDir);
  const states = await listStates(dataDir);
  const nameOf = (h: HeldState) => states.find((s) => identity(s) === h.identity);
  let release: HeldState[];
  if ('all' in which) {
    release = held;
  } else {
    release = [];
    for (const name of which.names) {
      const h = held.find((x) => {
        const s = nameOf(x);
        return x.identity === name || (s !== undefined && (s.name === name || bootName(s) === name));
      });
      if (!h) {
        const list = held.map((x) => (nameOf(x) ? bootName(nameOf(x)!) : x.identity)).join(', ');
        throw new UsageError(`${name} is not a held state (held: ${list || 'none'})`);
      }
      release.push(h);
    }
  }
  await writeHeld(dataDir, held.filter((h) => !release.includes(h)), taken);
  return release.map((h) => (nameOf(h) ? bootName(nameOf(h)!) : h.identity));
}
