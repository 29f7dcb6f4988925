import lockfile from 'proper-lockfile';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LockBusyError } from '../lib/errors.js';
import { log } from '../lib/log.js';
import { DATA } from '../names.js';

interface Owner {
  pid: number;
  session: string;
  started: number;
  /** The lock directory this owner made: a newer lock is never removed for it. */
  lockIno: number;
}

export interface LockOptions {
  /** Seconds to wait for another save to finish; 0 fails at once. */
  waitSeconds: number;
  session: string;
  onWait?: (holder: string) => void;
}

export interface HeldLock {
  /** False once another process took the lock over: stop before touching states. */
  readonly intact: () => boolean;
}

/**
 * One save at a time per data partition. The lock lives on the data
 * partition itself, so it covers every process that can write there. A lock
 * left by a crash is taken over at once when its owner is provably gone (same
 * boot, no such process, or an earlier boot), and by proper-lockfile's
 * staleness rule otherwise.
 */
export async function withSaveLock<T>(dataDir: string, options: LockOptions, fn: (lock: HeldLock) => Promise<T>): Promise<T> {
  const lockPath = join(dataDir, DATA.saveLock);
  const ownerPath = join(dataDir, DATA.saveLockOwner);
  let compromised = false;
  const deadline = Date.now() + options.waitSeconds * 1000;
  let announced = false;
  let release: (() => Promise<void>) | undefined;
  for (;;) {
    try {
      release = await lockfile.lock(dataDir, {
        lockfilePath: lockPath,
        realpath: false,
        stale: 30_000,
        update: 10_000,
        retries: 0,
        onCompromised: (e) => {
          compromised = true;
          log.error({ error: e.message }, 'the save lock was taken over');
        },
      });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ELOCKED') throw e;
      const owner = await readOwner(ownerPath);
      if (owner && ownerIsGone(owner, options.session) && (await inode(lockPath)) === owner.lockIno) {
        log.warn({ owner }, 'recovering the lock of a save that is gone');
        await rm(ownerPath, { force: true });
        await rm(lockPath, { recursive: true, force: true });
        continue;
      }
      const holder = owner ? `pid ${owner.pid}, since ${new Date(owner.started).toISOString()}` : 'owner unknown';
      if (Date.now() >= deadline) throw new LockBusyError(lockPath, holder);
      if (!announced) options.onWait?.(holder);
      announced = true;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  const owner: Owner = { pid: process.pid, session: options.session, started: Date.now(), lockIno: await inode(lockPath) };
  await writeFile(ownerPath, JSON.stringify(owner));
  try {
    return await fn({ intact: () => !compromised });
  } finally {
    await rm(ownerPath, { force: true });
    await release().catch((e) => log.warn({ error: (e as Error).message }, 'releasing the save lock'));
  }
}

async function readOwner(path: string): Promise<Owner | undefined> {
  try {
    const o = JSON.parse(await readFile(path, 'utf8')) as Owner;
    return typeof o.pid === 'number' ? o : undefined;
  } catch {
    return undefined;
  }
}

function ownerIsGone(owner: Owner, session: string): boolean {
  if (!session || !owner.session) return false;
  if (owner.session !== session) return true; // the machine rebooted since
  try {
    process.kill(owner.pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

async function inode(path: string): Promise<number> {
  return (await stat(path).catch(() => ({ ino: -1 }))).ino;
}
