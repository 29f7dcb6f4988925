import { classify, DEFAULT_CLASS_RULES, type ClassRule, type SpecialClass } from './classify.js';

/**
 * What a transaction would do, from the output of `apk add --simulate` or
 * `apk upgrade --simulate` (apk-tools 2.14 and 3). Every change is one stdout
 * line printed by src/commit.c print_change:
 *
 *   "(%i/%i) %s %s%s (%s)"          status, message, name, @tag, version
 *   "(%i/%i) %s %s%s (%s -> %s)"    the same with old and new version
 *
 * apk-tools 3 pads the step to the width of the count ("(%*i/%i)"): a
 * transaction of 10 to 99 changes prints "( 1/12) Installing ..." up to
 * "( 9/12)", then "(10/12)" (checked with apk-tools 3.0.6).
 *
 * where the message is Installing, Purging, Reinstalling, "[APK unavailable,
 * skipped] Reinstalling", Updating pinning (one version), or Upgrading,
 * Downgrading, Replacing (two). Dependencies the solver pulls in are
 * changes like any other, so they are all there. Other lines (fetch, "OK:",
 * "Upgrading critical system libraries and apk-tools:", warnings on stderr)
 * are not changes and are passed over.
 */

export type ApkChangeAction = 'install' | 'purge' | 'reinstall' | 'repin' | 'upgrade' | 'downgrade' | 'replace';

export interface ApkChange {
  action: ApkChangeAction;
  name: string;
  /** The repository tag without its `@` (`edge` for `linux-lts@edge`). */
  tag?: string;
  /** The version installed afterwards (or purged, for a purge). */
  version: string;
  /** The version before, for upgrade, downgrade and replace. */
  oldVersion?: string;
  /** "[APK unavailable, skipped] Reinstalling": nothing will be written. */
  skipped?: boolean;
  /** The change's number and the count, as apk numbers them. */
  step: number;
  total: number;
}

const MESSAGES: Record<string, ApkChangeAction> = {
  Installing: 'install',
  Purging: 'purge',
  Reinstalling: 'reinstall',
  'Updating pinning': 'repin',
  Upgrading: 'upgrade',
  Downgrading: 'downgrade',
  Replacing: 'replace',
};

const LINE =
  /^\( *(\d+)\/(\d+)\) (\[APK unavailable, skipped\] )?(Installing|Purging|Reinstalling|Updating pinning|Upgrading|Downgrading|Replacing) ([^\s@()]+)(?:@(\S+))? \((\S+?)(?: -> (\S+))?\)$/;

export function parseApkChanges(output: string): ApkChange[] {
  const changes: ApkChange[] = [];
  for (const raw of output.split('\n')) {
    const m = LINE.exec(raw.replace(/\r$/, ''));
    if (!m) continue;
    const [, step, total, skipped, message, name, tag, first, second] = m;
    const change: ApkChange = {
      action: MESSAGES[message!]!,
      name: name!,
      version: second ?? first!,
      step: Number(step),
      total: Number(total),
    };
    if (tag) change.tag = tag;
    if (second) change.oldVersion = first;
    if (skipped) change.skipped = true;
    changes.push(change);
  }
  return changes;
}

/** Changes after which the package's files are (re)written from a new .apk. */
export function writesPackage(change: ApkChange): boolean {
  if (change.skipped) return false;
  return change.action !== 'purge' && change.action !== 'repin';
}

export interface SpecialChange extends ApkChange {
  class: SpecialClass;
}

/** The special packages a transaction would install, upgrade, downgrade, replace or reinstall. */
export function specialChanges(changes: readonly ApkChange[], rules: readonly ClassRule[] = DEFAULT_CLASS_RULES): SpecialChange[] {
  const out: SpecialChange[] = [];
  for (const change of changes) {
    if (!writesPackage(change)) continue;
    const cls = classify(change.name, rules);
    if (cls) out.push({ ...change, class: cls });
  }
  return out;
}

/**
 * Whether apk solved the transaction and went through it (simulated or
 * not): commit.c ends that with its summary line, "OK: ..." or
 * "N error(s); ...", printed at verbosity 1 and more. A solver failure
 * ("unable to select packages") prints none.
 *
 * apk's exit status alone does not say it: every commit counts the installed
 * packages whose scripts failed earlier (`f:s` in the installed database) as
 * errors, so with one such package each `apk add`, simulations included,
 * ends in "1 error; ..." and status 1 while the transaction itself is sound
 * and, when not simulated, runs (checked with apk-tools 2.14.4).
 */
export function reachedCommit(output: string): boolean {
  return /^(?:OK:|[0-9]+ errors?;) /m.test(output);
}
