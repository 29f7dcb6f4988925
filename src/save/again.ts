import { VerifyMismatchError } from '../lib/errors.js';

/**
 * ATTEMPT, and again up to RETRIES more times while it fails only because
 * files changed while it ran (a VerifyMismatchError whose every difference
 * is live): a file written at the moment of a shutdown save, a log flushed,
 * is usually quiet a moment later. A failed save leaves the saved states as
 * they were, so trying again risks nothing; any other failure is thrown at
 * once. ONRETRY hears of each failure that is tried again.
 */
export async function againWhileChanging<T>(
  attempt: () => Promise<T>,
  retries: number,
  onRetry: (e: VerifyMismatchError, next: number) => void,
): Promise<T> {
  for (let tried = 0; ; tried++) {
    try {
      return await attempt();
    } catch (e) {
      if (!(e instanceof VerifyMismatchError) || !e.live || tried >= retries) throw e;
      onRetry(e, tried + 1);
    }
  }
}
