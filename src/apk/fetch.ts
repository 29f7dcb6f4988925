import { existsSync } from 'node:fs';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '../lib/errors.js';
import { captureApk } from './exec.js';

/**
 * Fetching the exact package a transaction would install, through the real
 * apk, so its repositories, cache, proxy settings and keys apply.
 *
 * apk-tools 2.14's `apk fetch` takes package *names* (app_fetch.c mark_name,
 * database.c apk_db_foreach_matching_name: a `name=version` argument
 * matches no name) and fetches the highest version any repository has. That
 * is the version an install picks in the usual case; when it is not (a
 * version pinned in world, a downgrade, a newer one in a tagged repository
 * the name is not pinned to), `apk policy <name>` says which repositories
 * have the wanted version, and `apk fetch` is run against each of them alone
 * (`--repositories-file /dev/null --repository URL`) until one gives it.
 */

export class ApkFetchError extends CairnError {
  override readonly code = 'APK_FETCH';
  constructor(readonly pkg: string, readonly version: string, detail: string) {
    super(`could not fetch ${pkg} ${version}: ${detail}`, {
      hint: 'nothing was installed; check the network and /etc/apk/repositories (apk update), then try again',
    });
  }
}

export interface FetchRequest {
  realApk: string;
  name: string;
  version: string;
  /** The user's repository options (--root, -X, --repositories-file, --keys-dir, --cache-dir...). */
  repoOptions: readonly string[];
  outDir: string;
}

/** The package file's path in outDir. */
export async function fetchExact(req: FetchRequest): Promise<string> {
  const file = `${req.name}-${req.version}.apk`;
  const first = join(req.outDir, 'any');
  await mkdir(first, { recursive: true });
  const r = await captureApk(req.realApk, ['fetch', '--quiet', ...req.repoOptions, `--output=${first}`, '--', req.name]);
  if (existsSync(join(first, file))) return join(first, file);
  const got = (await readdir(first)).filter((f) => f.endsWith('.apk'));

  const repos = await reposWithVersion(req);
  for (const [i, url] of repos.entries()) {
    const dir = join(req.outDir, `repo-${i}`);
    await mkdir(dir, { recursive: true });
    const alone = [...withoutRepositories(req.repoOptions), '--repositories-file=/dev/null', `--repository=${url}`];
    await captureApk(req.realApk, ['fetch', '--quiet', ...alone, `--output=${dir}`, '--', req.name]);
    if (existsSync(join(dir, file))) return join(dir, file);
  }
  const why = r.exitCode !== 0 ? (r.stderr || r.stdout).trim().split('\n').slice(-3).join('; ') : got.length ? `apk fetch gave ${got.join(', ')}` : 'apk fetch gave nothing';
  throw new ApkFetchError(req.name, req.version, why || 'no repository has it');
}

/** Repository URLs `apk policy` lists for one version of a name. */
export async function reposWithVersion(req: Omit<FetchRequest, 'outDir'>): Promise<string[]> {
  const r = await captureApk(req.realApk, ['policy', ...req.repoOptions, '--', req.name]);
  if (r.exitCode !== 0) return [];
  return parsePolicy(r.stdout, req.name).get(req.version) ?? [];
}

/**
 * app_policy.c print_policy: "<name> policy:", then per version "  <ver>:"
 * and its sources "    [@tag ]<url>" (or "    lib/apk/db/installed").
 */
export function parsePolicy(text: string, name: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let inName = false;
  let version: string | undefined;
  for (const line of text.split('\n')) {
    const head = /^(\S+) policy:$/.exec(line);
    if (head) {
      inName = head[1] === name;
      version = undefined;
      continue;
    }
    if (!inName) continue;
    const v = /^ {2}(\S+):$/.exec(line);
    if (v) {
      version = v[1]!;
      if (!out.has(version)) out.set(version, []);
      continue;
    }
    const src = /^ {4}(?:@\S+ )?(\S+)$/.exec(line);
    if (src && version && src[1] !== 'lib/apk/db/installed' && /^(?:[a-z]+:\/\/|\/)/.test(src[1]!)) {
      const list = out.get(version)!;
      if (!list.includes(src[1]!)) list.push(src[1]!);
    }
  }
  return out;
}

function withoutRepositories(options: readonly string[]): string[] {
  return options.filter((o) => !o.startsWith('--repository=') && !o.startsWith('--repositories-file='));
}
