/**
 * A STAND-IN FOR apk, imitating apk-tools 2.14 and, where the wrapper reads
 * their output differently, apk-tools 3 (scenario `apkVersion: 3`), for tests
 * on machines without them (Debian build machines; Alpine's mirrors
 * unreachable). Bundled by apk-harness.ts into a node script the wrapper runs
 * as its "real apk".
 *
 * It records every argv (JSON lines in $STANDIN_LOG) and, from the scenario
 * in $STANDIN_SCENARIO:
 * - add/upgrade/fix/del --simulate: prints the scenario's changes in apk 2.14's
 *   exact format (commit.c print_change; apk 3 pads the step to the width of
 *   the count, "( 1/12)"), then "OK: ..." (or "N errors; ..."
 *   and status N with `brokenPackages`); local
 *   repositories given with --repository are read as apk would (APKINDEX
 *   signature checked against the keys directory, else a WARNING);
 * - add/upgrade/fix: "installs" each change: from a local repository when one
 *   lists it (its identity must match the file), else from the upstream
 *   directory; the package's signature is checked with src/apk/verify.ts
 *   against the keys directory (as apk would refuse an untrusted one), then
 *   recorded in <root>/lib/apk/db/installed, its scripts in
 *   <root>/lib/apk/db/standin-scripts; `add` adds its arguments to world;
 * - fetch --output DIR NAME: copies the newest <NAME>-*.apk of the upstream directory;
 * - policy, update, --print-arch, --version: what apk prints;
 * - trusted keys: --keys-dir (under --root), else <root>/etc/apk/keys, and
 *   for apk 3 <root>/lib/apk/keys after it;
 * - add --initdb (a new root, as `cairn image build --base alpine` makes
 *   one; needs no scenario): resolves the names and their plain `depend`
 *   names in the --repository directories (each APKINDEX's signature checked
 *   against --keys-dir, as apk does), refuses a package whose identity is
 *   not the one its trusted index gives (apk-tools 2.14.4, checked by hand:
 *   a package from a trusted index is accepted by that identity, whatever
 *   key signed the package itself; a tampered one is "BAD signature";
 *   an untrusted index leaves its packages unselectable), extracts the packages'
 *   files into --root and writes lib/apk/db/installed, etc/apk/world and
 *   etc/apk/arch. No scripts run, no versions are compared, no network;
 * - any other applet: prints $STANDIN_STDOUT / $STANDIN_STDERR, echoes a
 *   line read from stdin when $STANDIN_READ_STDIN is set, and exits with
 *   $STANDIN_EXIT or dies by $STANDIN_SIGNAL.
 * Otherwise it does not solve dependencies, extract files or run scripts.
 */
import { appendFileSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { hasOption, optionValue, optionValues, parseApkArgs } from '../../src/apk/args.js';
import { splitGzipMembers } from '../../src/apk/gzip.js';
import { packageIdentity, readApk } from '../../src/apk/read.js';
import { loadPublicKey, parseSignatureEntryName, verifyBytes } from '../../src/apk/sign.js';
import { decodeTar } from '../../src/apk/tar.js';
import { unpackEntries } from '../../src/apk/unpack.js';
import { verifyApk } from '../../src/apk/verify.js';

export interface StandinChange {
  message: 'Installing' | 'Upgrading' | 'Downgrading' | 'Replacing' | 'Reinstalling' | 'Purging';
  name: string;
  version: string;
  old?: string;
  tag?: string;
}

export interface StandinScenario {
  arch: string;
  /** Directory of upstream packages: <name>-<version>.apk. */
  upstream: string;
  upstreamUrl: string;
  changes: Partial<Record<'add' | 'upgrade' | 'fix' | 'del', StandinChange[]>>;
  /** `update` fails as apk does when another apk holds the lock. */
  lockHeld?: boolean;
  /**
   * Installed packages whose script failed earlier (`f:s` in the installed
   * database): real apk 2.14 counts each as an error in every commit,
   * simulations included, ending in "N error(s); ..." and status N, while
   * the transaction itself runs.
   */
  brokenPackages?: number;
  /** Which apk-tools to imitate where 2.14 and 3 print differently; default 2 (2.14). */
  apkVersion?: 2 | 3;
}

function main(argv: string[]): number {
  const log = process.env.STANDIN_LOG;
  if (log) appendFileSync(log, `${JSON.stringify(argv)}\n`);
  const p = parseApkArgs(argv);
  const root = optionValue(p, 'root') ?? '/';
  const given = optionValue(p, 'keys-dir');
  if (p.applet === 'add' && hasOption(p, 'initdb')) {
    pending.push(initdb(root, given ? resolve(root, given) : join(root, 'etc/apk/keys'), optionValue(p, 'arch') ?? 'x86_64', optionValues(p, 'repository'), p.positionals));
    return 0;
  }
  const s = JSON.parse(readFileSync(process.env.STANDIN_SCENARIO!, 'utf8')) as StandinScenario;
  const keysDirs = given ? [resolve(root, given)] : [join(root, 'etc/apk/keys'), ...(s.apkVersion === 3 ? [join(root, 'lib/apk/keys')] : [])];
  if (hasOption(p, 'print-arch')) return out(`${s.arch}\n`);
  if (hasOption(p, 'version')) return out(`apk-tools ${s.apkVersion === 3 ? '3.0.6' : '2.14.4'}, compiled for ${s.arch}.\n`);

  switch (p.applet) {
    case 'update':
      if (s.lockHeld) {
        process.stderr.write('ERROR: Unable to lock database: Resource temporarily unavailable\nERROR: Failed to open apk database: Resource temporarily unavailable\n');
        return 99;
      }
      return 0;
    case 'fetch': {
      // fetch's own options are not modelled by args.ts: take --output=DIR (the form the wrapper uses) by hand.
      const dir = argv.find((a) => a.startsWith('--output='))?.slice('--output='.length) ?? '.';
      for (const name of p.positionals) {
        const files = readdirSync(s.upstream).filter((f) => f.startsWith(`${name}-`) && /^[0-9]/.test(f.slice(name.length + 1))).sort();
        if (!files.length) {
          process.stdout.write(`${name}: unable to select package (or its dependencies)\n`);
          return 1;
        }
        copyFileSync(join(s.upstream, files.at(-1)!), join(dir, files.at(-1)!));
      }
      return 0;
    }
    case 'policy':
      for (const name of p.positionals) {
        process.stdout.write(`${name} policy:\n`);
        for (const f of readdirSync(s.upstream).filter((f) => f.startsWith(`${name}-`))) {
          process.stdout.write(`  ${f.slice(name.length + 1, -4)}:\n    ${s.upstreamUrl}\n`);
        }
      }
      return 0;
    case 'add':
    case 'upgrade':
    case 'fix':
    case 'del':
      return transaction(s, p.applet, root, keysDirs, hasOption(p, 'simulate'), optionValues(p, 'repository'), p.positionals, hasOption(p, 'allow-untrusted'));
    default:
      return passthrough();
  }
}

function out(text: string): number {
  process.stdout.write(text);
  return 0;
}

function passthrough(): number {
  if (process.env.STANDIN_STDOUT) process.stdout.write(process.env.STANDIN_STDOUT);
  if (process.env.STANDIN_STDERR) process.stderr.write(process.env.STANDIN_STDERR);
  if (process.env.STANDIN_READ_STDIN) {
    const line = readFileSync(0, 'utf8').split('\n')[0];
    process.stdout.write(`read from stdin: ${line}\n`);
  }
  if (process.env.STANDIN_SIGNAL) {
    process.kill(process.pid, process.env.STANDIN_SIGNAL as NodeJS.Signals);
    setTimeout(() => undefined, 10_000);
    return -1;
  }
  return Number(process.env.STANDIN_EXIT ?? '0');
}

interface Local {
  dir: string;
  /** name-version -> its C: and A: (apk looks for the file in `<dir>/<A:>/`, apk_repo_format_real_url). */
  entries: Map<string, { identity: string; arch?: string }>;
}

/** A local repository as apk reads it: the APKINDEX's signature checked, its C: and A: per name-version. */
function readLocalRepo(url: string, arch: string, keysDirs: string[]): Local | string {
  const dir = url.replace(/^@\S+\s+/, '');
  const index = join(dir, arch, 'APKINDEX.tar.gz');
  if (!existsSync(index)) return `WARNING: opening ${dir}: No such file or directory`;
  const bytes = readFileSync(index);
  const members = splitGzipMembers(bytes);
  const sig = decodeTar(members[0]!.inflated).entries[0]!;
  const parsed = parseSignatureEntryName(sig.name);
  const keyFile = parsed && keysDirs.map((d) => join(d, parsed.keyName)).find((f) => existsSync(f));
  const key = keyFile ? loadPublicKey(readFileSync(keyFile)) : undefined;
  if (!parsed || !key || !verifyBytes(bytes.subarray(members[1]!.start), sig.content!, key, parsed.type)) {
    return `WARNING: opening ${dir}: UNTRUSTED signature`;
  }
  const text = decodeTar(members[1]!.inflated).entries.find((e) => e.name === 'APKINDEX')!.content!.toString();
  const entries: Local['entries'] = new Map();
  for (const block of text.split('\n\n')) {
    const f = (k: string) => block.split('\n').find((l) => l.startsWith(`${k}:`))?.slice(2);
    if (f('P')) entries.set(`${f('P')}-${f('V')}`, { identity: f('C')!, arch: f('A') });
  }
  return { dir, entries };
}

function transaction(
  s: StandinScenario,
  applet: 'add' | 'upgrade' | 'fix' | 'del',
  root: string,
  keysDirs: string[],
  simulate: boolean,
  repositories: string[],
  positionals: string[],
  allowUntrusted: boolean,
): number {
  // Command-line repositories: the last given is numbered first.
  const locals: Local[] = [];
  for (const url of [...repositories].reverse()) {
    const r = readLocalRepo(url, s.arch, keysDirs);
    if (typeof r === 'string') process.stderr.write(`${r}\n`);
    else locals.push(r);
  }
  const changes = s.changes[applet] ?? [];
  const chosen: { change: StandinChange; file: string; bytes: Buffer }[] = [];
  let missing = 0;
  changes.forEach((c, i) => {
    const tag = c.tag ? `@${c.tag}` : '';
    const versions = c.old ? `${c.old} -> ${c.version}` : c.version;
    const key = `${c.name}-${c.version}`;
    // apk 2.14 reinstalls the installed package by its identity (C:): from a local
    // repository listing that very identity, else upstream's when it is that one,
    // else "[APK unavailable, skipped]" (checked with apk-tools 2.14.4).
    const wanted = c.message === 'Reinstalling' ? installedIdentity(root, c.name) : undefined;
    const local = locals.find((l) => l.entries.has(key) && (wanted === undefined || l.entries.get(key)!.identity === wanted));
    const upstreamFile = join(s.upstream, `${key}.apk`);
    const skipped =
      wanted !== undefined && !local && !(existsSync(upstreamFile) && packageIdentity(readApk(readFileSync(upstreamFile)).control.compressed) === wanted);
    // apk 2.14: "(%i/%i)"; apk 3: "(%*i/%i)", the step as wide as the count.
    const step = s.apkVersion === 3 ? String(i + 1).padStart(String(changes.length).length) : String(i + 1);
    process.stdout.write(`(${step}/${changes.length}) ${skipped ? '[APK unavailable, skipped] ' : ''}${c.message} ${c.name}${tag} (${versions})\n`);
    if (c.message === 'Purging' || skipped) return;
    const entry = local?.entries.get(key);
    const file = local ? join(local.dir, entry!.arch ?? s.arch, `${key}.apk`) : upstreamFile;
    if (local && !existsSync(file)) {
      // A simulation opens no package file; the real run reports it, installs the rest and fails.
      if (!simulate) {
        process.stderr.write(`ERROR: ${key}: package mentioned in index not found (try 'apk update')\n`);
        missing++;
      }
      return;
    }
    const bytes = readFileSync(file);
    if (local && packageIdentity(readApk(bytes).control.compressed) !== entry!.identity) {
      throw new Error(`${key}: the local repository's identity does not match its file`);
    }
    chosen.push({ change: c, file, bytes });
  });
  const summary = (errors: number) => `${errors ? `${errors} error${errors > 1 ? 's' : ''};` : 'OK:'} 12 MiB in 34 packages\n`;
  const broken = s.brokenPackages ?? 0;
  if (simulate) {
    process.stdout.write(summary(broken));
    return broken;
  }

  const installedPath = join(root, 'lib/apk/db/installed');
  mkdirSync(join(root, 'lib/apk/db'), { recursive: true });
  const blocks = existsSync(installedPath) ? readFileSync(installedPath, 'utf8').split('\n\n').filter(Boolean) : [];
  const scripts: string[] = [];
  const copies: [string, Buffer][] = [];
  for (const { change, file, bytes } of chosen) {
    if (!allowUntrusted) {
      // verify.ts is synchronous enough for a stand-in: run it to completion below.
      pending.push(verifyApk(bytes, { trustedKeysDir: keysDirs, source: file }).then(() => undefined));
    }
    const pkg = readApk(bytes);
    const kept = blocks.filter((b) => !b.split('\n').includes(`P:${change.name}`));
    blocks.length = 0;
    blocks.push(...kept, `C:${packageIdentity(pkg.control.compressed)}\nP:${change.name}\nV:${change.version}\nF:${pkg.dataEntries.map((e) => e.name).join(',')}`);
    for (const e of pkg.controlEntries) if (e.name !== '.PKGINFO') scripts.push(`${change.name} ${e.name}`);
    copies.push([change.name, bytes]);
  }
  finish = () => {
    writeFileSync(installedPath, blocks.map((b) => `${b}\n\n`).join(''));
    appendFileSync(join(root, 'lib/apk/db/standin-scripts'), scripts.map((l) => `${l}\n`).join(''));
    mkdirSync(join(root, 'lib/apk/db/standin-packages'), { recursive: true });
    for (const [name, bytes] of copies) writeFileSync(join(root, 'lib/apk/db/standin-packages', `${name}.apk`), bytes);
    if (applet === 'add') {
      const worldPath = join(root, 'etc/apk/world');
      mkdirSync(join(root, 'etc/apk'), { recursive: true });
      const world = existsSync(worldPath) ? readFileSync(worldPath, 'utf8').split('\n').filter(Boolean) : [];
      for (const a of positionals) if (!world.includes(a)) world.push(a);
      writeFileSync(worldPath, `${world.sort().join('\n')}\n`);
    }
    process.stdout.write(summary(missing + broken));
  };
  return missing + broken;
}

/** What `apk add --initdb` does in an empty root, from local repositories only. */
async function initdb(root: string, keysDir: string, arch: string, repositories: string[], names: string[]): Promise<void> {
  const available = new Map<string, { file: string; identity: string; depends: string[] }>();
  for (const url of [...repositories].reverse()) {
    const dir = url.replace(/^@\S+\s+/, '');
    if (/^[a-z]+:\/\//.test(dir)) throw new Error(`${dir}: the stand-in reads local repositories only`);
    const r = readLocalRepo(dir, arch, [keysDir]);
    if (typeof r === 'string') throw new Error(r.replace(/^WARNING: /, ''));
    const text = decodeTar(splitGzipMembers(readFileSync(join(dir, arch, 'APKINDEX.tar.gz')))[1]!.inflated).entries.find((e) => e.name === 'APKINDEX')!.content!.toString();
    for (const block of text.split('\n\n')) {
      const f = (k: string) => block.split('\n').find((l) => l.startsWith(`${k}:`))?.slice(2);
      const name = f('P');
      if (!name || available.has(name)) continue;
      const depends = (f('D') ?? '').split(' ').filter((d) => d && !/^(!|so:|cmd:|pc:)/.test(d)).map((d) => d.replace(/[<>=~].*$/, ''));
      available.set(name, { file: join(dir, f('A') ?? arch, `${name}-${f('V')}.apk`), identity: f('C')!, depends });
    }
  }
  const order: string[] = [];
  const visit = (name: string, by: string) => {
    if (order.includes(name)) return;
    const a = available.get(name);
    if (!a) throw new Error(`unable to select packages:\n  ${name} (no such package):\n    required by: ${by}`);
    order.push(name);
    for (const d of a.depends) visit(d, name);
  };
  for (const n of names) visit(n, `world[${n}]`);
  const blocks: string[] = [];
  for (const [i, name] of order.entries()) {
    const a = available.get(name)!;
    const bytes = readFileSync(a.file);
    const pkg = readApk(bytes);
    const identity = packageIdentity(pkg.control.compressed);
    if (identity !== a.identity) throw new Error(`${name}-${pkg.pkginfo.pkgver}: BAD signature`);
    const info = pkg.pkginfo;
    process.stdout.write(`(${i + 1}/${order.length}) Installing ${name} (${info.pkgver})\n`);
    await unpackEntries(pkg.dataEntries, root, a.file);
    const files = pkg.dataEntries.filter((e) => e.type !== 'directory').map((e) => e.name);
    const lines = [`C:${identity}`, `P:${name}`, `V:${info.pkgver}`, `A:${arch}`];
    let dir: string | undefined;
    for (const f of files) {
      const d = f.includes('/') ? f.slice(0, f.lastIndexOf('/')) : '';
      if (d !== dir) lines.push(`F:${(dir = d)}`);
      lines.push(`R:${f.slice(f.lastIndexOf('/') + 1)}`);
    }
    blocks.push(lines.join('\n'));
  }
  mkdirSync(join(root, 'lib/apk/db'), { recursive: true });
  mkdirSync(join(root, 'etc/apk'), { recursive: true });
  writeFileSync(join(root, 'lib/apk/db/installed'), blocks.map((b) => `${b}\n\n`).join(''));
  writeFileSync(join(root, 'etc/apk/world'), `${[...names].sort().join('\n')}\n`);
  writeFileSync(join(root, 'etc/apk/arch'), `${arch}\n`);
  process.stdout.write(`OK: ${order.length} packages\n`);
}

function installedIdentity(root: string, name: string): string | undefined {
  const path = join(root, 'lib/apk/db/installed');
  if (!existsSync(path)) return undefined;
  const block = readFileSync(path, 'utf8').split('\n\n').find((b) => b.split('\n').includes(`P:${name}`));
  return block?.split('\n').find((l) => l.startsWith('C:'))?.slice(2);
}

const pending: Promise<void>[] = [];
let finish: (() => void) | undefined;

const code = (() => {
  try {
    return main(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`ERROR: ${(e as Error).message}\n`);
    return 1;
  }
})();
if (code >= 0) {
  Promise.all(pending).then(
    () => {
      finish?.();
      process.exitCode = code;
    },
    (e: Error) => {
      process.stderr.write(`ERROR: ${e.message}\n`);
      process.exitCode = 1;
    },
  );
}
