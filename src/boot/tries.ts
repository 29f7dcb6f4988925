import { UsageError } from '../lib/errors.js';
import type { GrubEnv } from './grubenv.js';

/**
 * Boot counting (docs/boot.md "Boot counting"): what is on trial and how
 * many tries it has left. The counters live in GRUB's environment block on
 * the ESP, where the menu (grub/grub.cfg.in) reads them and takes one off
 * before it boots what is on trial; cairn sets them when something new is
 * installed and clears them once a boot of it is good.
 */

/** The GRUB variables; grub/grub.cfg.in names them too. */
export const TRY_VARS = { kernel: 'cairn_kernel_tries', state: 'cairn_state_tries' } as const;

/** Tries GRUB gives a new kernel or a new newest state, unless the boot record sets another number. */
export const DEFAULT_BOOT_TRIES = 3;
/** More would only delay the rollback; the menu's countdown is rendered for each value. */
export const MAX_BOOT_TRIES = 9;

export type TrialSubject = keyof typeof TRY_VARS;

/** Tries left for each subject on trial; absent: confirmed (not on trial). 0: rolled back. */
export type Tries = Partial<Record<TrialSubject, number>>;

export function triesOf(env: GrubEnv): Tries {
  const out: Tries = {};
  for (const subject of Object.keys(TRY_VARS) as TrialSubject[]) {
    const raw = env.get(TRY_VARS[subject]);
    if (raw === undefined || raw === '') continue;
    // What GRUB counts down from anything it does not know (grub.cfg.in) is one try used.
    out[subject] = /^[0-9]$/.test(raw) ? Number(raw) : MAX_BOOT_TRIES - 1;
  }
  return out;
}

export function withTries(env: GrubEnv, tries: Tries): GrubEnv {
  const next = new Map(env);
  for (const subject of Object.keys(TRY_VARS) as TrialSubject[]) {
    const n = tries[subject];
    if (n === undefined) next.delete(TRY_VARS[subject]);
    else next.set(TRY_VARS[subject], String(n));
  }
  return next;
}

/** Something new to try: a kernel just installed, or a newest state just saved. 0 tries: counting is off. */
export function arm(t: Tries, subject: TrialSubject, tries: number): Tries {
  const { [subject]: _, ...rest } = t;
  return tries > 0 ? { ...rest, [subject]: tries } : rest;
}

export interface GoodBoot {
  /** The kernel on trial is the one running. */
  kernelOnTrialRan: boolean;
  /** The newest state is what the initramfs unpacked, asked for and not fallen back from. */
  newestRan: boolean;
}

/** A boot that came up: what ran is confirmed; what did not run keeps its count. */
export function markGood(t: Tries, boot: GoodBoot): Tries {
  let next = t;
  if (boot.kernelOnTrialRan) next = arm(next, 'kernel', 0);
  if (boot.newestRan) next = arm(next, 'state', 0);
  return next;
}

/** `cairn boot retry`: what was rolled back gets its tries again. */
export function retry(t: Tries, tries: number): Tries {
  let next = t;
  for (const subject of Object.keys(TRY_VARS) as TrialSubject[]) {
    if (t[subject] === 0) next = arm(next, subject, tries);
  }
  return next;
}

/** In words, for `cairn status`. */
export function describeTries(subject: TrialSubject, left: number | undefined, tries: number): string {
  const what = subject === 'kernel' ? 'the default kernel' : 'the newest state';
  if (left === undefined) return `${what}: confirmed`;
  if (left === 0) {
    return `${what}: did not come up in ${tries} ${tries === 1 ? 'try' : 'tries'}; GRUB boots ${subject === 'kernel' ? 'the previous kernel' : 'the backup'} (cairn boot retry tries it again)`;
  }
  return `${what}: on trial, ${left} of ${tries} tries left until a boot is marked good`;
}

/** The --boot-tries option's value. */
export function parseBootTries(v: string): number {
  if (!/^[0-9]$/.test(v) || Number(v) > MAX_BOOT_TRIES) {
    throw new UsageError(`--boot-tries "${v}" is not a number from 0 (no counting) to ${MAX_BOOT_TRIES}`);
  }
  return Number(v);
}
