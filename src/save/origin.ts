import { checkIntegrity, type SealCheck } from '../state/seal.js';
import type { StateFile } from '../state/states.js';
import { resolveFrom } from './rotate.js';

/**
 * The state this session came from, read whole when it is about to take the
 * backup name: rotation trusts it to replace the backup, and a seal says
 * nothing of the bytes before it, which can have rotted since the boot
 * checked them. A state that fails is passed over like one the boot could
 * not use (resolveFrom goes on to the next intact one) and is kept, never
 * dropped, by the rotation (its check is failed).
 *
 * Returns the state and the inodes found damaged, with why.
 */
export async function intactFrom(
  states: readonly StateFile[],
  fromId: string | undefined,
  links: readonly StateFile[] = [],
): Promise<{ from: StateFile | undefined; damaged: Map<number, string> }> {
  const damaged = new Map<number, string>();
  for (;;) {
    const from = resolveFrom(markDamaged(states, damaged), fromId, markDamaged(links, damaged));
    // The backup keeps its name whatever it holds: nothing is pushed out for it.
    if (!from || from.role === 'backup') return { from, damaged };
    const whole = await checkIntegrity(from.path, { deltas: true });
    if (whole.ok) return { from, damaged };
    damaged.set(from.ino, whole.problem);
  }
}

/** STATES with the checks of the damaged inodes failed. */
export function markDamaged(states: readonly StateFile[], damaged: ReadonlyMap<number, string>): StateFile[] {
  return states.map((s) => {
    const problem = damaged.get(s.ino);
    if (problem === undefined) return s;
    const check: SealCheck = { ok: false, problem, fileSize: s.check.fileSize, ...(s.check.seal ? { seal: s.check.seal } : {}) };
    return { ...s, check };
  });
}
