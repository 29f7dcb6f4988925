import { readFileSync } from 'node:fs';
import { lstat, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { unlinkDurably } from '../lib/durable.js';
import { log } from '../lib/log.js';
import { collectLinks } from '../checkpoint/chain.js';
import { deltaTemp } from '../checkpoint/write.js';
import { DATA } from '../names.js';
import { withSaveLock, type SaveLockOptions } from '../save/lock.js';
import { notAStateImage } from './seal.js';
import { listStates, type StateFile } from './states.js';

export interface ResetOptions {
  dataDir: string;
  lock: SaveLockOptions;
  /** Also empty the user's folder (DATA.userDir), which is otherwise kept. */
  all: boolean;
  /**
   * The running session's own directory (the boot record's): a mark there
   * tells this session's saves, the one at shutdown first, not to write the
   * session back. Undefined outside a booted system.
   */
  runDir: string | undefined;
  /** Run only the first n removals, then stop as a crash would. For crash-safety tests. */
  stopAfterSteps?: number;
}

export interface ResetReport {
  removed: string[];
  /** Entries at a state's name that are not state images, which reset leaves alone as the save does. */
  leftAlone: { name: string; why: string }[];
  userEmptied: boolean;
}

/** The mark a reset leaves in the session's run directory (see ResetOptions.runDir). */
export const RESET_MARK = 'reset';

/**
 * Why the session whose run directory is RUNDIR is not to be saved, from
 * the mark markSessionNotToSave left there (the command it names), or
 * undefined when there is none. openrc/cairn-save.initd reads it the same way.
 */
export function sessionMarkReason(runDir: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(join(runDir, RESET_MARK), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return 'this session reset the stick';
  }
  return / cairn restore$/m.test(text) ? 'this session restored a backup onto the stick' : 'this session reset the stick';
}

/**
 * Leaves RESET_MARK in the session's run directory: the session's saves, the
 * shutdown's first, then refuse to write it back over what COMMAND put on
 * the stick (`cairn reset`, `cairn restore`) unless the user confirms.
 */
export async function markSessionNotToSave(runDir: string, command: string): Promise<void> {
  await writeFile(join(runDir, RESET_MARK), `${new Date().toISOString()} ${command}\n`, { mode: 0o644 });
}

/**
 * Back to the stick as built: every saved state goes, and what saves keep
 * beside them (the held list, the failed-save record, a save's leftovers).
 * Under the save lock, so no save runs meanwhile.
 *
 * Crash-safe like a save: one file at a time, each removal made durable
 * before the next, oldest first and the newest state last. A power cut at
 * any moment leaves a stick whose remaining states are the newest of what
 * was there, each whole, so it boots as before and the reset can be run
 * again; never a stick with an older state and no newer one.
 */
export async function resetStick(o: ResetOptions): Promise<ResetReport> {
  return withSaveLock(o.dataDir, o.lock, async () => {
    const states = await listStates(o.dataDir);
    const report: ResetReport = { removed: [], leftAlone: [], userEmptied: false };
    const order = [...states].sort((a, b) => rank(a) - rank(b));
    const files: string[] = [];
    for (const s of order) {
      const odd = notAStateImage(await lstat(s.path));
      if (odd) report.leftAlone.push({ name: s.name, why: odd });
      else files.push(s.name);
    }
    // Only the saves' own files, and only regular files: whatever else holds
    // these names was put there by someone else.
    for (const name of [DATA.temp, deltaTemp(DATA.temp), DATA.backupNext, DATA.held, DATA.saveFailed]) {
      const st = await lstat(join(o.dataDir, name)).catch(() => undefined);
      if (st?.isFile()) files.push(name);
    }
    // Marked first: a crash after a removal must not let this session's
    // shutdown save write it all back.
    if (o.runDir) await markSessionNotToSave(o.runDir, 'cairn reset');
    let steps = 0;
    for (const name of files) {
      if (o.stopAfterSteps !== undefined && steps >= o.stopAfterSteps) return report;
      log.info({ name }, 'reset: removing');
      await unlinkDurably(join(o.dataDir, name));
      report.removed.push(name);
      steps++;
    }
    // No state is left to need a checkpoint chain's links.
    report.removed.push(...(await collectLinks(o.dataDir, [])));
    if (o.all) {
      const user = join(o.dataDir, DATA.userDir);
      const names = await readdir(user).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') return [];
        throw e;
      });
      // The folder itself stays, with its owner and mode as built.
      for (const n of names) await rm(join(user, n), { recursive: true, force: true });
      report.userEmptied = true;
    }
    return report;
  });
}

/** Removal order: older generations first (the lowest number is the oldest), then the backup, the newest last. */
function rank(s: StateFile): number {
  if (s.role === 'generation') return (s.generation ?? 0) - 1e9;
  return s.role === 'backup' ? 1 : 2;
}
