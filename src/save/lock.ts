import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { LockBusyError } from '../lib/errors.js';
import { withLock, type HeldLock, type LockOptions } from '../lib/lock.js';
import { DATA } from '../names.js';

/** waitSeconds: how long to wait for another save; session: the kernel's boot id. */
export type SaveLockOptions = Pick<LockOptions, 'waitSeconds' | 'session' | 'onWait'>;

/**
 * One save at a time per data partition. The lock lives on the data
 * partition itself, so it covers every process that can write there, and
 * survives a power cut: how a lock whose owner is gone is told from a live
 * one, whatever the clocks say, is src/lib/lock.ts's.
 */
export async function withSaveLock<T>(dataDir: string, options: SaveLockOptions, fn: (lock: HeldLock) => Promise<T>): Promise<T> {
  const lockPath = join(dataDir, DATA.saveLock);
  return withLock(lockPath, { ...options, what: 'save', busy: (holder) => new LockBusyError(lockPath, holder) }, async (lock) => {
    // The record an older cairn kept beside its lock: whoever wrote it is gone.
    await rm(join(dataDir, DATA.saveLockOwner), { force: true });
    return fn(lock);
  });
}
