import type { BootRecord } from '../bootRecord.js';
import { readBootState, type BootState } from '../esp/bootState.js';
import type { Esp } from '../esp/esp.js';
import { log } from '../lib/log.js';
import { ESP_PATHS } from '../names.js';
import { formatGrubEnv, parseGrubEnv, type GrubEnv } from './grubenv.js';
import { arm, DEFAULT_BOOT_TRIES, markGood, retry, triesOf, withTries, type TrialSubject, type Tries } from './tries.js';

/**
 * The boot counters on a stick's ESP (src/boot/tries.ts says what they
 * mean). Every write replaces the whole environment block by a rename
 * (Esp.install), so a power cut leaves the old counts or the new ones.
 */

/** The tries a stick gives, from its boot record. */
export function bootTriesOf(state: BootState): number {
  return state.settings.bootTries ?? DEFAULT_BOOT_TRIES;
}

async function readEnv(esp: Esp): Promise<GrubEnv> {
  const block = await esp.read(ESP_PATHS.grubEnv);
  return block ? parseGrubEnv(block, `/${ESP_PATHS.grubEnv}`) : new Map();
}

export async function readTries(esp: Esp): Promise<Tries> {
  return triesOf(await readEnv(esp));
}

/** Writes TRIES into the block, keeping whatever else it holds; a block that is not one is replaced. */
export async function writeTries(esp: Esp, tries: Tries): Promise<void> {
  const env = await readEnv(esp).catch((e: Error) => {
    log.warn({ err: e.message }, 'replacing GRUB\'s environment block');
    return new Map<string, string>();
  });
  await esp.install(ESP_PATHS.grubEnv, { data: formatGrubEnv(withTries(env, tries)) });
}

/**
 * A new kernel or a new newest state is on the stick: it gets the stick's
 * tries (or TRIES; 0 takes it off trial, as when the newest state is gone).
 */
export async function armTries(esp: Esp, subject: TrialSubject, tries?: number): Promise<Tries> {
  const n = tries ?? bootTriesOf(await readBootState(esp));
  const now = await readTries(esp).catch(() => undefined);
  const next = arm(now ?? {}, subject, n);
  // A state armed already (checkpoints every few minutes) leaves the ESP unwritten.
  if (!now || next.kernel !== now.kernel || next.state !== now.state) await writeTries(esp, next);
  return next;
}

export interface GoodBootReport {
  before: Tries;
  after: Tries;
  /** In words, what the mark confirmed. */
  confirmed: string[];
}

/**
 * The boot came up (the cairn-boot-good service): the kernel that runs, if
 * it is the one on trial, and the newest state, if this boot unpacked it as
 * asked, are confirmed. A rollback boot confirms nothing it rolled back from.
 */
export async function markBootGood(esp: Esp, record: BootRecord | undefined, runningKernel: string): Promise<GoodBootReport> {
  const state = await readBootState(esp);
  // A block GRUB cannot read counts nothing: the mark writes a whole one.
  let readable = true;
  const before = await readTries(esp).catch(() => {
    readable = false;
    return {} as Tries;
  });
  const kernelOnTrialRan = runningKernel === state.kernel.release;
  const newestRan = record !== undefined && record.requested === 'default' && record.used === 'default' && !record.fallback;
  const after = markGood(before, { kernelOnTrialRan, newestRan });
  const confirmed = [
    ...(before.kernel !== undefined && after.kernel === undefined ? [`kernel ${runningKernel}`] : []),
    ...(before.state !== undefined && after.state === undefined ? ['the newest state'] : []),
  ];
  if (confirmed.length || !readable || !(await esp.exists(ESP_PATHS.grubEnv))) await writeTries(esp, after);
  return { before, after, confirmed };
}

/** `cairn boot retry`: what was rolled back is tried again from the next boot on. */
export async function retryBoot(esp: Esp): Promise<{ before: Tries; after: Tries }> {
  const state = await readBootState(esp);
  const before = await readTries(esp).catch(() => ({}) as Tries);
  const after = retry(before, bootTriesOf(state));
  await writeTries(esp, after);
  return { before, after };
}
