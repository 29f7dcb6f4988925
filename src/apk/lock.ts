import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { currentSession } from '../bootRecord.js';
import { CairnError } from '../lib/errors.js';
import { withLock, type LockOptions } from '../lib/lock.js';

/**
 * One package wrapper at a time per root. Two wrappers interleaving their
 * simulate, repack and install steps could each install the other's
 * half-prepared transaction, so the whole wrapper run holds this lock. It
 * lives under <root>/run/cairn (tmpfs: a reboot clears it) and is cairn's one
 * lock (src/lib/lock.ts): a lock whose owner is gone is taken over at once,
 * a live wrapper's never.
 *
 * apk's own lock (<root>/lib/apk/db/lock, flock) is apk's: the wrapper's apk
 * calls that write pass `--wait` so they wait for another apk, bounded.
 */

export class ApkWrapperBusyError extends CairnError {
  override readonly code = 'APK_WRAPPER_LOCKED';
  override readonly exitCode = 75; // EX_TEMPFAIL
  constructor(readonly lockPath: string, readonly holder: string, readonly waitedSeconds: number) {
    super(`another cairn apk is running (${holder}); waited ${waitedSeconds}s`, {
      hint: 'wait for it to finish and run the command again',
    });
  }
}

/** waitSeconds: how long to wait for another wrapper; 0 fails at once. */
export type WrapperLockOptions = Pick<LockOptions, 'waitSeconds' | 'onWait'>;

export async function withWrapperLock<T>(runDir: string, o: WrapperLockOptions, fn: () => Promise<T>): Promise<T> {
  await mkdir(runDir, { recursive: true });
  const lockPath = join(runDir, 'apk.lock');
  const busy = (holder: string) => new ApkWrapperBusyError(lockPath, holder, o.waitSeconds);
  return withLock(lockPath, { ...o, session: await currentSession(), what: 'apk wrapper', busy }, () => fn());
}
