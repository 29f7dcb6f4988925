import lockfile from 'proper-lockfile';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { CairnError } from '../lib/errors.js';
import { log } from '../lib/log.js';

/**
 * One package wrapper at a time per root. Two wrappers interleaving their
 * simulate, repack and install steps could each install the other's
 * half-prepared transaction, so the whole wrapper run holds this lock. It
 * lives under <root>/run/cairn (tmpfs: a reboot clears it); a lock whose
 * owner process is gone is taken over at once, any other after
 * proper-lockfile's staleness time.
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

export interface WrapperLockOptions {
  /** Seconds to wait for another wrapper; 0 fails at once. */
  waitSeconds: number;
  onWait?: (holder: string) => void;
}

export async function withWrapperLock<T>(runDir: string, o: WrapperLockOptions, fn: () => Promise<T>): Promise<T> {
  await mkdir(runDir, { recursive: true });
  const lockPath = `${runDir}/apk.lock`;
  const ownerPath = `${runDir}/apk.owner`;
  const deadline = Date.now() + o.waitSeconds * 1000;
  let announced = false;
  let release: () => Promise<void>;
  for (;;) {
    try {
      release = await lockfile.lock(runDir, { lockfilePath: lockPath, realpath: false, stale: 30_000, update: 10_000, retries: 0 });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ELOCKED') throw e;
      const pid = Number((await readFile(ownerPath, 'utf8').catch(() => '')).trim());
      if (pid > 0 && !alive(pid)) {
        log.warn({ pid }, 'taking over the apk wrapper lock of a process that is gone');
        await rm(ownerPath, { force: true });
        await rm(lockPath, { recursive: true, force: true });
        continue;
      }
      const holder = pid > 0 ? `pid ${pid}` : 'owner unknown';
      if (Date.now() >= deadline) throw new ApkWrapperBusyError(lockPath, holder, o.waitSeconds);
      if (!announced) o.onWait?.(holder);
      announced = true;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  await writeFile(ownerPath, `${process.pid}\n`);
  try {
    return await fn();
  } finally {
    await rm(ownerPath, { force: true });
    await release().catch((e) => log.warn({ error: (e as Error).message }, 'releasing the apk wrapper lock'));
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}
