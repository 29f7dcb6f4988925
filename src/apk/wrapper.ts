import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { GRUB_LIB } from '../grub/core.js';
import { grubUpdateLines } from '../packages/grub.js';
import { removalLines } from '../packages/kernel.js';
import type { SystemTarget } from '../packages/target.js';
import { CairnError, UsageError } from '../lib/errors.js';
import { log } from '../lib/log.js';
import { withTempDir } from '../lib/resources.js';
import {
  hasOption,
  INSTALLING_APPLETS,
  optionValue,
  parseApkArgs,
  repositoryOptions,
  verbosity,
  withOptionsAppended,
  type ParsedApkArgs,
} from './args.js';
import { classify, DEFAULT_CLASS_RULES, type ClassRule, type SpecialClass } from './classify.js';
import { captureApk, execApk, type CapturedApk } from './exec.js';
import { fetchExact, ApkFetchError } from './fetch.js';
import { kernelInstalled, readInstalled } from './installed.js';
import { ensureLocalKey, type LocalKey } from './localKey.js';
import { withWrapperLock } from './lock.js';
import { KERNELS_MARKER, patchFor, SYSTEM_HOOKS, type PatchResult, type SpecialPatch, type SystemHooks } from './patch.js';
import { setPkgInfoField } from './pkginfo.js';
import { packageIdentity } from './read.js';
import { repackApk } from './repack.js';
import { writeLocalRepo } from './repo.js';
import { parseApkChanges, reachedCommit, writesPackage, type ApkChange } from './simulate.js';
import type { TarEntry } from './tar.js';
import { unpackEntries } from './unpack.js';
import { verifyApk } from './verify.js';

/**
 * `apk`, typed by the user, as cairn runs it (DESIGN.md "Package wrapper").
 *
 * 1. Commands that cannot install anything (every applet but add, upgrade
 *    and fix; --simulate; --help...) run the real apk at once, unchanged,
 *    with the terminal, and its exit status is returned.
 * 2. add, upgrade and fix: under the wrapper's lock, the indexes are brought
 *    up to date (`apk update`, so the transaction apk is about to make is the
 *    one the simulation shows), then the same command runs with --simulate.
 *    No special package in it: the real command runs unchanged.
 * 3. Special packages: each is fetched, its upstream signature and datahash
 *    checked against the keys directory, unpacked, patched and repacked,
 *    signed with the local key. The repacks go into a local repository with a
 *    signed APKINDEX, added to the user's own command with --repository.
 *    apk prefers it: for two packages of one version, neither installed, its
 *    solver takes the one in the lowest-numbered repository, and
 *    command-line repositories are numbered first, the last given first
 *    (solver.c compare_providers, database.c apk_db_open). A repository
 *    per pinning tag keeps tagged packages as preferred as upstream's.
 *    So one apk transaction installs everything, with the user's scripts,
 *    triggers and world exactly as the command itself would leave them:
 *    no package is added to /etc/apk/world that the user did not name.
 * 4. Before apk runs: the command with the local repository is simulated
 *    again and must install no special package that was not prepared; then
 *    the patches' system halves run (modules image, ESP, firmware image).
 *    Anything failing up to here stops the wrapper before apk runs.
 * 5. After apk: the installed database must name the repacked packages'
 *    identities; apk's exit status is returned.
 */

export interface ApkWrapperOptions {
  /** apk's arguments, as the user gave them. */
  argv: readonly string[];
  /** The real apk (/sbin/apk). */
  realApk: string;
  /** The stick the special packages go to; asked for only when there are some. */
  target: () => Promise<SystemTarget>;
  rules?: readonly ClassRule[];
  hooks?: SystemHooks;
  /** Seconds to wait for another cairn apk, and (apk's --wait) for another apk. */
  lockWaitSeconds?: number;
  /** How the mkinitfs trigger runs cairn (an absolute path where known). */
  cairnCommand?: string;
  /** RSA size for a new local key. */
  keyBits?: number;
  /** Progress lines (stderr). */
  say?: (line: string) => void;
}

export class ApkUntrustedRefusedError extends CairnError {
  override readonly code = 'APK_ALLOW_UNTRUSTED';
  override readonly exitCode = 2;
  constructor(readonly packages: readonly string[]) {
    super(`--allow-untrusted with special packages (${packages.join(', ')}): cairn never installs them with signature checks off`, {
      hint: 'run the command without --allow-untrusted; to install a package of your own, put its signer\'s public key in /etc/apk/keys',
    });
  }
}

/**
 * A special package could not be prepared or put on the stick; apk was not
 * run. `applied`: what earlier packages of the transaction already put on
 * the stick (a firmware image written before a kernel failed).
 */
export class SpecialPackageError extends CairnError {
  override readonly code = 'APK_SPECIAL';
  constructor(readonly pkg: string, readonly version: string, readonly step: string, cause: unknown, readonly applied: readonly string[] = []) {
    const inner = cause instanceof Error ? cause.message : String(cause);
    super(`${pkg} ${version}: ${step} failed: ${inner}`, {
      cause,
      hint:
        (applied.length ? `apk was not run; already on the stick: ${applied.join('; ')}. ` : `nothing was installed and apk was not run. `) +
        ((cause as CairnError)?.hint ? `${(cause as CairnError).hint}. ` : '') +
        `Fix the cause and run the command again, or leave ${pkg} out of it`,
    });
  }
}

/** apk would install a special package the wrapper did not prepare, or from elsewhere than the local repository. */
export class ApkTransactionDriftError extends CairnError {
  override readonly code = 'APK_DRIFT';
  constructor(message: string, hint: string) {
    super(message, { hint });
  }
}

export class ApkLockedError extends CairnError {
  override readonly code = 'APK_LOCKED';
  override readonly exitCode = 75;
  constructor(readonly root: string, readonly waitedSeconds: number) {
    super(`another apk holds the package database lock (${join(root, 'lib/apk/db/lock')}); waited ${waitedSeconds}s`, {
      hint: 'wait for the other apk to finish and run the command again',
    });
  }
}

export interface Prepared {
  change: ApkChange & { class: SpecialClass };
  /** False when the package holds nothing the patch changes: apk installs upstream's. */
  repacked: boolean;
  patch: SpecialPatch;
  tree?: string;
  bytes?: Buffer;
  pkginfo?: string;
  identity?: string;
  upstreamKey?: string;
  kernelReleases: string[];
  result?: PatchResult;
}

const DEFAULT_LOCK_WAIT = 120;

export async function runApkWrapper(o: ApkWrapperOptions): Promise<number> {
  const parsed = parseApkArgs(o.argv);
  const installs = parsed.applet !== undefined && INSTALLING_APPLETS.includes(parsed.applet);
  const removes = parsed.applet === 'del';
  if ((!installs && !removes) || parsed.stopsEarly || hasOption(parsed, 'simulate')) {
    return execApk(o.realApk, parsed.argv);
  }
  if (hasOption(parsed, 'overlay-from-stdin')) {
    throw new UsageError('--overlay-from-stdin is for the initramfs of a diskless Alpine, not a cairn stick', {
      hint: `run ${o.realApk} directly if you really mean it`,
    });
  }
  const root = optionValue(parsed, 'root') ?? '/';
  const say = o.say ?? ((line: string) => process.stderr.write(`cairn: ${line}\n`));
  const wait = o.lockWaitSeconds ?? DEFAULT_LOCK_WAIT;
  return withWrapperLock(join(root, 'run/cairn'), { waitSeconds: wait, onWait: (h) => say(`waiting up to ${wait}s for another cairn apk (${h})`) }, () =>
    removes ? removing(o, parsed, root, say) : wrapped(o, parsed, root, wait, say),
  );
}

/** `apk del`: straight to apk, then the stick forgets a kernel whose package went. */
async function removing(o: ApkWrapperOptions, parsed: ParsedApkArgs, root: string, say: (l: string) => void): Promise<number> {
  const rules = o.rules ?? DEFAULT_CLASS_RULES;
  const first = await simulate(o.realApk, parsed);
  const removesKernel = solved(first) && parseApkChanges(first.stdout).some((c) => c.action === 'purge' && classify(c.name, rules) === 'kernel');
  if (!removesKernel) return execApk(o.realApk, parsed.argv);
  const target = await o.target();
  const status = await execApk(o.realApk, parsed.argv);
  if (status === 0) await forgetKernels(o, target, root, say);
  return status;
}

async function forgetKernels(o: ApkWrapperOptions, target: SystemTarget, root: string, say: (l: string) => void): Promise<void> {
  const r = await (o.hooks ?? SYSTEM_HOOKS).forgetRemovedKernels(target, (release) => kernelInstalled(root, release));
  removalLines(r).forEach((l) => say(l));
}

async function wrapped(o: ApkWrapperOptions, parsed: ParsedApkArgs, root: string, wait: number, say: (l: string) => void): Promise<number> {
  const rules = o.rules ?? DEFAULT_CLASS_RULES;
  const repoOptions = repositoryOptions(parsed);
  if (!hasOption(parsed, 'no-network')) await refreshIndexes(o.realApk, repoOptions, root, wait, say);

  const first = await simulate(o.realApk, parsed);
  if (!solved(first)) {
    // The transaction fails as it stands (apk's solver says why): show that, install nothing.
    process.stdout.write(first.stdout ? `${first.stdout}\n` : '');
    process.stderr.write(first.stderr ? `${first.stderr}\n` : '');
    return first.exitCode;
  }
  const changes = parseApkChanges(first.stdout);
  const specials = specialsOf(changes, rules, true);
  const removesKernel = changes.some((c) => c.action === 'purge' && classify(c.name, rules) === 'kernel');
  if (specials.length === 0 && !removesKernel) return execApk(o.realApk, parsed.argv);
  if (specials.length && hasOption(parsed, 'allow-untrusted')) throw new ApkUntrustedRefusedError(specials.map((c) => c.name));

  const target = await o.target();
  const status = specials.length ? await installSpecials(o, parsed, { root, wait, say, rules, repoOptions, specials, target }) : await execApk(o.realApk, parsed.argv);
  if (status !== 0) return status;
  const hooks = o.hooks ?? SYSTEM_HOOKS;
  // GRUB's files went in as they are (scripts that write a menu dropped):
  // the stick's boot files are remade from them where the version changed.
  if (specials.some((c) => c.class === 'grub')) {
    grubUpdateLines(await hooks.updateGrubBootFiles(target, { libDir: join(root, GRUB_LIB) })).forEach((l) => say(l));
  }
  if (removesKernel) await forgetKernels(o, target, root, say);
  return status;
}

interface SpecialsContext {
  root: string;
  wait: number;
  say: (l: string) => void;
  rules: readonly ClassRule[];
  repoOptions: string[];
  specials: (ApkChange & { class: SpecialClass })[];
  target: SystemTarget;
}

/** A transaction with special packages: fetched, verified, repacked, their stick files written, then installed by apk. */
async function installSpecials(o: ApkWrapperOptions, parsed: ParsedApkArgs, c: SpecialsContext): Promise<number> {
  const { root, wait, say, rules, repoOptions, specials, target } = c;
  const keysDirs = await trustedKeyDirs(o.realApk, parsed, root);
  const key = await ensureLocalKey(target.dataDir, keysDirs[0]!, { bits: o.keyBits });
  if (key.created.publicKey) say(`wrote the local signing key's public half to ${key.publicPath}`);

  return withTempDir('.cairn-apk-', async (work) => {
    const prepared: Prepared[] = [];
    for (const change of specials) {
      const p = await prepare(o, change, { work, keysDirs, key, repoOptions, say });
      if (p) prepared.push(p);
    }
    const repacked = prepared.filter((p) => p.repacked);
    if (repacked.length === 0) return execApk(o.realApk, parsed.argv);

    const repoArgs = await localRepositories(o.realApk, parsed, root, work, repacked, key);
    const finalArgv = [`--wait=${wait}`, ...withOptionsAppended(parsed, repoArgs)];
    const finalChanges = await checkFinalTransaction(o.realApk, finalArgv, prepared, rules, work);
    const kept = keptByApk(repacked, finalChanges);
    for (const p of kept) {
      say(
        `${p.change.name} ${p.change.version}: apk skips its reinstall: the installed package is a repack by an earlier cairn, ` +
          'which no repository holds (apk reinstalls a package by its identity), and the repack made now differs from it; ' +
          'the package and its files on the stick stay as they are',
      );
    }
    const changing = repacked.filter((p) => !kept.includes(p));

    const applied: string[] = [];
    for (const p of changing) {
      try {
        p.result = await p.patch.apply(target, { tree: p.tree!, name: p.change.name, version: p.change.version });
      } catch (e) {
        throw new SpecialPackageError(p.change.name, p.change.version, `installing its ${p.change.class} files on the stick`, e, applied);
      }
      for (const note of p.result.notes) say(`${p.change.name}: ${note}`);
      if (p.change.class === 'kernel' || p.change.class === 'firmware') applied.push(...p.result.notes.map((n) => `${p.change.name}: ${n}`));
    }

    const marker = join(root, KERNELS_MARKER);
    await mkdir(dirname(marker), { recursive: true });
    await writeFile(marker, changing.flatMap((p) => p.kernelReleases).map((r) => `${r}\n`).join(''));
    let status: number;
    try {
      status = await execApk(o.realApk, finalArgv);
    } finally {
      await rm(marker, { force: true });
    }
    if (status === 0) await checkInstalled(root, changing, say);
    return status;
  }, work(target));
}

/** Temp space for fetched and unpacked packages: the data partition, not RAM. */
function work(target: SystemTarget): string | undefined {
  return existsSync(target.dataDir) ? target.dataDir : undefined;
}

/** The special changes of a transaction that write files; skipped reinstalls too when `withSkipped`. */
export function specialsOf(changes: readonly ApkChange[], rules: readonly ClassRule[], withSkipped: boolean): (ApkChange & { class: SpecialClass })[] {
  const out: (ApkChange & { class: SpecialClass })[] = [];
  for (const c of changes) {
    const writes = writesPackage(c) || (withSkipped && c.skipped === true && c.action === 'reinstall');
    if (!writes) continue;
    const cls = classify(c.name, rules);
    if (cls) out.push({ ...c, class: cls });
  }
  return out;
}

/**
 * The directories apk takes trusted keys from, the one the local key's
 * public half goes to first. `--keys-dir` alone, relative to `--root` (apk
 * 2.14 database.c apk_db_open, apk 3 context.c apk_ctx_get_trust: both open
 * it under the root, so an absolute one is the host's); else
 * `<root>/etc/apk/keys`, and for apk-tools 3 `<root>/lib/apk/keys` after it
 * (apk.8 "Configuration files": a key name seen in the first hides the
 * same name in the second).
 */
export async function trustedKeyDirs(realApk: string, parsed: ParsedApkArgs, root: string): Promise<string[]> {
  const given = optionValue(parsed, 'keys-dir');
  if (given) return [resolve(root, given)];
  const dirs = [join(root, 'etc/apk/keys')];
  if ((await apkMajorVersion(realApk)) >= 3) dirs.push(join(root, 'lib/apk/keys'));
  return dirs;
}

/** 2 or 3, from `apk --version` ("apk-tools 3.0.6, compiled for x86_64."); 2 when it says nothing readable. */
async function apkMajorVersion(realApk: string): Promise<number> {
  const r = await captureApk(realApk, ['--version']);
  const m = /^apk-tools (\d+)\./m.exec(r.stdout);
  return m ? Number(m[1]) : 2;
}

async function refreshIndexes(realApk: string, repoOptions: readonly string[], root: string, wait: number, say: (l: string) => void): Promise<void> {
  const r = await captureApk(realApk, ['update', '--quiet', `--wait=${wait}`, ...repoOptions]);
  if (r.exitCode === 0) return;
  const out = `${r.stdout}\n${r.stderr}`;
  if (/Unable to lock database/i.test(out)) throw new ApkLockedError(root, wait);
  say(`could not bring the package indexes up to date (apk update exited with ${r.exitCode}); going on with the cached ones`);
  log.warn({ output: out.trim().slice(-800) }, 'apk update failed');
}

/**
 * A simulation that solved the transaction: status 0, or apk's summary line
 * after a non-zero status that counts errors from before this command (a
 * package whose script failed earlier, see reachedCommit), which apk would
 * report just the same when run alone.
 */
function solved(r: CapturedApk): boolean {
  return r.exitCode === 0 || reachedCommit(r.stdout);
}

async function simulate(realApk: string, parsed: ParsedApkArgs | string[]): Promise<CapturedApk> {
  const p = Array.isArray(parsed) ? parseApkArgs(parsed) : parsed;
  // print_change only prints at verbosity 1 or more: undo the user's -q.
  const louder = Array.from({ length: Math.max(0, 1 - verbosity(p)) }, () => '--verbose');
  return captureApk(realApk, withOptionsAppended(p, ['--simulate', ...louder]));
}

interface PrepareContext {
  work: string;
  /** Where apk takes trusted keys from, in its order (trustedKeyDirs). */
  keysDirs: string[];
  key: LocalKey;
  repoOptions: readonly string[];
  say: (l: string) => void;
}

async function prepare(o: ApkWrapperOptions, change: ApkChange & { class: SpecialClass }, ctx: PrepareContext): Promise<Prepared | undefined> {
  const { name, version } = change;
  const label = `${name}-${version}.apk`;
  const dir = join(ctx.work, `${name}-${version}`);
  const patch = patchFor(change.class, o.hooks ?? SYSTEM_HOOKS, o.cairnCommand);
  const step = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (e) {
      throw new SpecialPackageError(name, version, what, e);
    }
  };

  ctx.say(`${name} ${version} is a ${change.class} package: fetching it to repack it for the stick`);
  let file: string;
  try {
    file = await fetchExact({ realApk: o.realApk, name, version, repoOptions: ctx.repoOptions, outDir: join(dir, 'fetched') });
  } catch (e) {
    if (change.skipped && e instanceof ApkFetchError) {
      ctx.say(`${name} ${version} is no longer in any repository: apk skips its reinstall`);
      return undefined;
    }
    throw new SpecialPackageError(name, version, 'fetching', e);
  }
  const bytes = await readFile(file);
  const upstream = await step('checking its signature', () => verifyApk(bytes, { trustedKeysDir: ctx.keysDirs, source: label }));
  const info = upstream.pkg.pkginfo;
  if (info.pkgname !== name || info.pkgver !== version) {
    throw new SpecialPackageError(name, version, 'fetching', new Error(`the fetched file is ${info.pkgname} ${info.pkgver}`));
  }
  const entries: TarEntry[] = upstream.pkg.dataEntries.map(({ offset: _o, end: _e, ...e }) => e);
  const control = {
    pkginfo: upstream.pkg.pkginfoText,
    scripts: upstream.pkg.controlEntries.filter((e) => e.name !== '.PKGINFO').map((e) => ({ name: e.name, content: e.content ?? Buffer.alloc(0), mode: e.mode })),
  };
  if (!patch.applies(entries, control)) {
    ctx.say(`${name} ${version} holds nothing cairn moves: apk installs it as it is`);
    return { change, repacked: false, patch, kernelReleases: [], upstreamKey: upstream.keyName };
  }

  const tree = join(dir, 'tree');
  await step('unpacking', () => unpackEntries(entries, tree, label));
  const newData = patch.transformData(entries);
  const repacked = await step('repacking', () =>
    repackApk({
      input: bytes,
      source: label,
      trustedKeysDir: ctx.keysDirs,
      signingKey: ctx.key.privateKey,
      keyName: ctx.key.keyName,
      transformData: () => newData,
      transformControl: (c) => {
        const next = patch.transformControl(c, newData);
        return { ...next, pkginfo: withProvenance(next.pkginfo, upstream.pkg.control.compressed, upstream.keyName, change.class) };
      },
    }),
  );
  // The repack must pass apk's own check against the keys apk will use.
  await step('checking the repacked package', () => verifyApk(repacked.bytes, { trustedKeysDir: ctx.keysDirs, source: `repacked ${label}` }));
  const moved = entries.length - newData.length;
  ctx.say(`${name} ${version}: signature by ${upstream.keyName} checked; repacked without ${moved} moved entr${moved === 1 ? 'y' : 'ies'}, signed with ${ctx.key.keyName}`);
  return {
    change,
    repacked: true,
    patch,
    tree,
    bytes: repacked.bytes,
    pkginfo: repacked.pkginfo,
    identity: repacked.identity,
    upstreamKey: upstream.keyName,
    kernelReleases: patch.kernelReleases?.(entries) ?? [],
  };
}

/** A comment line in .PKGINFO (apk skips lines starting with '#') saying where the package came from. */
function withProvenance(pkginfo: string, upstreamControl: Buffer, keyName: string, cls: SpecialClass): string {
  const lines = setPkgInfoField(pkginfo, 'datahash', undefined).split('\n').filter((l) => !l.startsWith('# cairn:'));
  const firstField = lines.findIndex((l) => !l.startsWith('#'));
  const at = firstField < 0 ? lines.length : firstField;
  lines.splice(at, 0, `# cairn: ${cls} package repacked by cairn's apk wrapper from ${packageIdentity(upstreamControl)} signed by ${keyName}`);
  return lines.join('\n');
}

async function dbArch(realApk: string, parsed: ParsedApkArgs, root: string): Promise<string> {
  const given = optionValue(parsed, 'arch');
  if (given) return given;
  try {
    const arch = (await readFile(join(root, 'etc/apk/arch'), 'utf8')).trim();
    if (arch) return arch;
  } catch {
    // apk falls back to its compiled-in architecture.
  }
  return (await captureApk(realApk, ['--print-arch'])).stdout.trim();
}

/** One signed local repository per pinning tag; the options that add them, the untagged one last (numbered first). */
async function localRepositories(realApk: string, parsed: ParsedApkArgs, root: string, work: string, repacked: readonly Prepared[], key: LocalKey): Promise<string[]> {
  const arch = await dbArch(realApk, parsed, root);
  const byTag = new Map<string, Prepared[]>();
  for (const p of repacked) byTag.set(p.change.tag ?? '', [...(byTag.get(p.change.tag ?? '') ?? []), p]);
  const args: string[] = [];
  for (const [tag, list] of [...byTag].sort(([a], [b]) => (a === '' ? 1 : b === '' ? -1 : a.localeCompare(b)))) {
    const dir = join(work, 'repo', tag || 'untagged');
    await writeLocalRepo({
      dir,
      arch,
      signingKey: key.privateKey,
      keyName: key.keyName,
      packages: list.map((p) => ({ bytes: p.bytes!, pkginfo: p.pkginfo!, identity: p.identity! })),
      description: 'cairn: special packages repacked for this stick',
    });
    args.push(`--repository=${tag ? `@${tag} ` : ''}${dir}`);
  }
  return args;
}

/**
 * The command as it will run, simulated: every special package it writes
 * must be one prepared (same name and version), and apk must have read the
 * local repositories without complaint.
 */
async function checkFinalTransaction(realApk: string, argv: string[], prepared: readonly Prepared[], rules: readonly ClassRule[], work: string): Promise<ApkChange[]> {
  const r = await simulate(realApk, argv);
  const complaint = `${r.stdout}\n${r.stderr}`.split('\n').find((l) => /WARNING|ERROR/.test(l) && l.includes(work));
  if (!solved(r) || complaint) {
    throw new ApkTransactionDriftError(
      `apk did not accept cairn's local repository of repacked packages: ${(complaint ?? r.stderr ?? r.stdout).trim().split('\n').slice(-3).join('; ')}`,
      'nothing was installed; is the local key in /etc/apk/keys (cairn-local.rsa.pub)?',
    );
  }
  const changes = parseApkChanges(r.stdout);
  for (const c of specialsOf(changes, rules, false)) {
    if (!prepared.some((p) => p.change.name === c.name && p.change.version === c.version)) {
      throw new ApkTransactionDriftError(
        `the transaction changed while cairn prepared it: it now installs ${c.name} ${c.version}, which was not repacked`,
        'nothing was installed; run the command again (another apk may have changed the package database or the indexes)',
      );
    }
  }
  return changes;
}

/**
 * Repacked packages apk will still not reinstall. `apk fix --reinstall`
 * reinstalls the installed package by its identity (`C:`); when that is a
 * repack made by an earlier cairn (another mkinitfs trigger, another cairn
 * path in it, another writer), no repository holds it, and the repack made
 * now is another package of the same version: apk prints "[APK unavailable,
 * skipped] Reinstalling" for it even with the local repository (checked with
 * apk-tools 2.14.4) and leaves it installed as it was.
 */
function keptByApk(repacked: readonly Prepared[], finalChanges: readonly ApkChange[]): Prepared[] {
  return repacked.filter(
    (p) => p.change.skipped && finalChanges.some((c) => c.name === p.change.name && c.version === p.change.version && c.skipped),
  );
}

/**
 * After apk: the repacked packages, not upstream's, are the ones installed.
 * When apk took upstream's, the stick's half was done all the same (the
 * patches ran before apk), but upstream's files are in the RAM layer too.
 * `apk fix --reinstall` cannot swap them: apk-tools 2.14 reinstalls the
 * installed package by its identity, so a kernel installed around the
 * wrapper (upstream's) is reinstalled as upstream's even with cairn's repack
 * of the same version in a repository numbered before it (checked with
 * apk-tools 2.14.4). That reinstall is what the user asked for and put the
 * kernel on the stick: a warning. apk preferring upstream's anywhere else
 * breaks what the wrapper relies on: an error.
 */
async function checkInstalled(root: string, repacked: readonly Prepared[], say: (l: string) => void): Promise<void> {
  const installed = await readInstalled(root);
  const wrong = repacked.filter((p) => {
    const i = installed.get(p.change.name);
    return i !== undefined && i.version === p.change.version && i.identity !== p.identity;
  });
  if (wrong.length === 0) return;
  const names = wrong.map((p) => p.change.name).join(' ');
  const what = wrong.map((p) => `${p.change.name} ${p.change.version}`).join(', ');
  const remedy = `cairn's repack replaces it at its next version (apk upgrade), or after apk del ${names} and apk add ${names} through cairn`;
  if (wrong.every((p) => p.change.action === 'reinstall')) {
    say(
      `apk reinstalled ${what} as installed, upstream's package (apk reinstalls by identity, not cairn's repack): ` +
        `its files on the stick are cairn's, but upstream's copies stay in the RAM layer; ${remedy}`,
    );
    return;
  }
  throw new ApkTransactionDriftError(
    `apk installed upstream's ${what} instead of cairn's repack`,
    `cairn put its kernel and firmware files on the stick before apk ran, but upstream's copies are in the RAM layer too; apk fix --reinstall keeps upstream's package: ${remedy}`,
  );
}
