import pRetry, { AbortError } from 'p-retry';
import { CommandFailedError } from './errors.js';
import { log } from './log.js';

/**
 * A busy mount point or loop device clears when whatever held it lets go
 * (a udev probe, a shell that just left the directory). Everything else is
 * permanent and fails at once.
 */
export function isTransient(e: unknown): boolean {
  if ((e as NodeJS.ErrnoException | null)?.code === 'EBUSY') return true;
  return e instanceof CommandFailedError && /busy/i.test(e.stderrTail);
}

export async function retryTransient<T>(what: string, fn: () => Promise<T>, retries = 5): Promise<T> {
  return pRetry(
    async () => {
      try {
        return await fn();
      } catch (e) {
        if (!isTransient(e)) throw new AbortError(e as Error);
        throw e;
      }
    },
    {
      retries,
      minTimeout: 200,
      factor: 2,
      onFailedAttempt: (e) => log.info({ what, attempt: e.attemptNumber, error: e.message }, 'transient failure, retrying'),
    },
  );
}
