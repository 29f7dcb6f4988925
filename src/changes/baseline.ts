import { readFileSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { uptime } from 'node:os';
import { join } from 'node:path';
import type { BootRecord } from '../bootRecord.js';
import { IntegrityError } from '../lib/errors.js';
import { readSeal } from '../state/seal.js';

/**
 * What the upper layer is compared with to tell what is unsaved: the state it
 * was unpacked from at boot, or the state the last successful save of this
 * session wrote.
 *
 * Every inode unpacked at boot, or saved by a save, had its ctime set before
 * the baseline's moment: unsquashfs sets each inode's mtime, owner and mode
 * after writing it, which sets its ctime to "now", and a save reads the
 * upper layer only after it began. Any later change to a file's data, mode,
 * owner, xattrs or link count, or a rename, sets its ctime to the time of the
 * change, and no user can set a ctime. So a file whose ctime is older than
 * the baseline's moment holds what the baseline holds, and its contents need
 * not be read: only files changed since are (changes.ts).
 */
export interface Baseline {
  since: 'boot' | 'save';
  /** For the user: "the boot (backup)", "the save at 2026-12-07 02:10:38 UTC". */
  label: string;
  /** The seal id of the state compared with; undefined when there is none (a clean boot not saved since): all is added. */
  stateId: string | undefined;
  /** Files whose ctime (ms since the epoch) is at or after this have their contents read; 0 reads all. */
  contentsSinceMs: number;
  /** Why every file's contents are read, when they are. */
  note?: string;
}

/** The mark a successful save leaves in the session's run directory: which state it wrote, and when it began. */
export const SAVED_MARK = 'saved';

/**
 * The kernel stamps ctimes from a coarse clock that lags the one Date.now()
 * reads by up to a tick, and ext4 with 128-byte inodes keeps whole seconds:
 * a change made just after the baseline's moment may carry a ctime a little
 * before it. A second of margin only adds a few files to read.
 */
const CTIME_MARGIN_MS = 1000;

/** A moment by the wall clock (ms since the epoch) and by the time since boot (s), which no clock setting moves. */
export interface Moment {
  wallMs: number;
  uptimeS: number;
}

/**
 * The ctime from which a file counts as changed since MOMENT. A clock set
 * back after it (NTP at boot, an RTC kept in local time) stamps later
 * changes with earlier times: the threshold moves back as far as the clock
 * did, which the time since boot tells. A clock set back and then forward
 * again between the moment and now is not seen (docs/saving.md).
 */
export function contentsThreshold(moment: Moment, now: Moment): number {
  const offsetThen = moment.wallMs - moment.uptimeS * 1000;
  const offsetNow = now.wallMs - now.uptimeS * 1000;
  const setBack = Math.max(0, offsetThen - offsetNow);
  return Math.max(0, moment.wallMs - setBack - CTIME_MARGIN_MS);
}

export const nowMoment = (): Moment => ({ wallMs: Date.now(), uptimeS: uptime() });

/**
 * Records, after a save has renamed its state into place as IMAGE, that it
 * is the baseline now, as of STARTEDMS: what changed after the save began
 * may or may not be in it, and is compared. A temp file renamed over the mark: the run directory is a
 * tmpfs that a power cut empties anyway, so no fsync; a failed save never
 * gets here and leaves the previous mark.
 */
export async function recordSavedBaseline(runDir: string | undefined, image: string, startedMs: number): Promise<void> {
  if (!runDir) return;
  const seal = await readSeal(image, { deltas: true });
  if (!seal.ok) throw new IntegrityError(image, `its seal did not read back after the save: ${seal.problem}`);
  const stateId = seal.seal.id;
  const now = nowMoment();
  const started: Moment = { wallMs: startedMs, uptimeS: now.uptimeS - (now.wallMs - startedMs) / 1000 };
  const file = join(runDir, SAVED_MARK);
  await writeFile(`${file}.tmp`, `state_id=${stateId}\nstarted_ms=${started.wallMs}\nstarted_uptime=${started.uptimeS.toFixed(3)}\n`, {
    mode: 0o644,
  });
  await rename(`${file}.tmp`, file);
}

interface SavedMark {
  stateId: string;
  started: Moment;
}

function readSavedMark(runDir: string): SavedMark | undefined {
  let text: string;
  try {
    text = readFileSync(join(runDir, SAVED_MARK), 'utf8');
  } catch {
    return undefined;
  }
  const map = new Map(text.split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  const stateId = map.get('state_id') ?? '';
  const wallMs = Number(map.get('started_ms'));
  const uptimeS = Number(map.get('started_uptime'));
  if (!stateId || !Number.isFinite(wallMs) || !Number.isFinite(uptimeS)) return undefined;
  return { stateId, started: { wallMs, uptimeS } };
}

/**
 * The baseline of this session: its last save's state if it saved, else
 * the state it booted from. Without a boot record (two directories given by
 * hand) it is the newest state, with every file's contents read.
 */
export function resolveBaseline(runDir: string | undefined, record: BootRecord | undefined, newestId: string | undefined, now = nowMoment()): Baseline {
  const saved = runDir ? readSavedMark(runDir) : undefined;
  if (saved) {
    const date = new Date(saved.started.wallMs).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
    return { since: 'save', label: `the save at ${date}`, stateId: saved.stateId, contentsSinceMs: contentsThreshold(saved.started, now) };
  }
  if (!record) {
    return {
      since: 'save',
      label: 'the newest saved state',
      stateId: newestId,
      contentsSinceMs: 0,
      note: 'no boot record: every file\'s contents are compared',
    };
  }
  if (record.used === 'clean') return { since: 'boot', label: 'the boot (clean)', stateId: undefined, contentsSinceMs: 0 };
  const label = `the boot (${record.used})`;
  if (record.unpacked === undefined) {
    return { since: 'boot', label, stateId: record.stateId, contentsSinceMs: 0, note: 'the boot record has no unpack time: every file\'s contents are compared' };
  }
  return { since: 'boot', label, stateId: record.stateId, contentsSinceMs: contentsThreshold(record.unpacked, now) };
}
