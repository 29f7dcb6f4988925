import { execa } from 'execa';
import { constants } from 'node:os';
import { ToolMissingError } from '../lib/errors.js';
import { log } from '../lib/log.js';
import { run, type RunResult } from '../lib/run.js';

/**
 * Running the real apk. Two ways:
 *
 * - `execApk`: the user's own command, with the terminal: stdin, stdout and
 *   stderr inherited, so prompts, progress bars and pipes behave as if apk
 *   ran alone. Its exit status is the wrapper's; a signal that killed it is
 *   reported the way a shell does, 128 + its number. While it runs, the
 *   signals a terminal sends to the whole foreground group (SIGINT, SIGQUIT)
 *   reach apk directly and are ignored here, so cairn outlives apk and
 *   reports its status; SIGTERM and SIGHUP sent to cairn alone are passed on.
 * - `captureApk`: the wrapper's own calls (simulate, fetch, policy), through
 *   src/lib/run.ts with output captured and stdin closed.
 */

export const REAL_APK_HINT = 'cairn wraps /sbin/apk (apk-tools): is apk-tools installed? (CAIRN_REAL_APK names another)';

const FORWARDED: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGHUP'];
const IGNORED: readonly NodeJS.Signals[] = ['SIGINT', 'SIGQUIT'];

export async function execApk(realApk: string, args: readonly string[], env?: Record<string, string>): Promise<number> {
  log.debug({ argv: [realApk, ...args] }, 'exec apk');
  const child = execa(realApk, [...args], { stdio: 'inherit', reject: false, env, extendEnv: true });
  const forward = (signal: NodeJS.Signals) => () => child.kill(signal);
  const handlers = new Map<NodeJS.Signals, () => void>();
  for (const s of FORWARDED) handlers.set(s, forward(s));
  for (const s of IGNORED) handlers.set(s, () => undefined);
  for (const [s, h] of handlers) process.on(s, h);
  try {
    const result = await child;
    if ((result as { code?: string }).code === 'ENOENT') throw new ToolMissingError(realApk, REAL_APK_HINT);
    return exitStatusOf(result.exitCode, result.signal);
  } finally {
    for (const [s, h] of handlers) process.off(s, h);
  }
}

/** A shell's view of how a process ended: its status, or 128 + the number of the signal that killed it. */
export function exitStatusOf(exitCode: number | undefined, signal: string | undefined | null): number {
  if (signal) {
    const n = (constants.signals as Record<string, number>)[signal];
    return 128 + (n ?? 0);
  }
  return exitCode ?? 1;
}

const ANY_STATUS = Array.from({ length: 255 }, (_, i) => i + 1);

export interface CapturedApk extends RunResult {
  argv: string[];
}

/** One of the wrapper's own apk calls; any exit status is returned, not thrown. */
export async function captureApk(realApk: string, args: readonly string[], timeoutMs = 900_000): Promise<CapturedApk> {
  const r = await run(realApk, args, { timeoutMs, okExitCodes: ANY_STATUS, hint: REAL_APK_HINT, env: { LC_ALL: 'C' } });
  return { ...r, argv: [realApk, ...args] };
}
