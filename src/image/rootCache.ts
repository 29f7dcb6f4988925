import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { log } from '../lib/log.js';
import { run } from '../lib/run.js';
import type { Served } from './repoDigest.js';

/** Marks a cached root whose bootstrap ran to its end; a root without it is never used. */
const COMPLETE = '.cairn-complete';

export interface CachedRootOptions {
  cacheDir: string;
  /** The first part of the cached root's name, e.g. `debian-bookworm`. */
  name: string;
  /** What the root is asked to be (release, mirror, packages, keys): another value, another root. */
  key: unknown;
  /**
   * What the repositories serve (their indexes, repoDigest.ts): another
   * content, another root. One that could not be read gives a root made
   * afresh for this build alone, neither taken from the cache nor kept.
   */
  served?: readonly Served[];
  /** Makes the root in `partial` (a fresh, empty path). */
  bootstrap: (partial: string) => Promise<void>;
}

/**
 * A bootstrapped root, made once per key and content of its repositories
 * and kept under `<cache>/roots`: a second build copies it instead of
 * downloading and installing again, and a repository that changed since
 * gets a new root. A bootstrap that fails or is killed leaves a `.partial`
 * directory that the next build removes, never a root that looks complete.
 * Builds that share a cache take turns on each root (a lock per root, held
 * while it is made and copied): the second waits and then reuses what the
 * first made.
 */
export async function cachedRoot(o: CachedRootOptions, target: string): Promise<{ cached?: string; reused: boolean }> {
  const served = o.served ?? [];
  const unread = served.flatMap((s) => ('problem' in s ? [s.problem] : []));
  if (unread.length) {
    log.warn({ problems: unread }, `a repository's index could not be read, so no cached root is known to match it: bootstrapping the root (${o.name}) afresh for this build`);
    await rm(target, { recursive: true, force: true });
    await o.bootstrap(target);
    return { reused: false };
  }
  const digest = createHash('sha256').update(JSON.stringify([o.key, served])).digest('hex').slice(0, 16);
  const cached = join(o.cacheDir, 'roots', `${o.name}-${digest}`);
  await mkdir(join(o.cacheDir, 'roots'), { recursive: true });
  return withCacheLock(cached, () => makeOrReuse(o, cached, target));
}

/**
 * Runs `fn` while holding `<path>.lock`, shared by every build using the
 * cache: a root being made, or the downloaded-packages directory that each
 * bootstrap's apt-get uses as its archive (apt refuses at once, not waits,
 * when another apt-get holds that directory's lock).
 */
export async function withCacheLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
  const release = await lockfile.lock(path, {
    lockfilePath: `${path}.lock`,
    realpath: false,
    // A bootstrap takes minutes: wait for it, and take over only a lock whose holder stopped refreshing it.
    stale: 60_000,
    update: 15_000,
    retries: { retries: 3600, factor: 1, minTimeout: 1000, maxTimeout: 1000 },
    onCompromised: (e) => log.warn({ path, error: e.message }, 'a build cache lock was taken over'),
  });
  try {
    return await fn();
  } finally {
    await release().catch(() => undefined);
  }
}

async function makeOrReuse(o: CachedRootOptions, cached: string, target: string): Promise<{ cached: string; reused: boolean }> {
  const reused = existsSync(join(cached, COMPLETE));
  if (!reused) {
    log.info({ cached }, `bootstrapping a root (${o.name})`);
    const partial = `${cached}.partial`;
    await rm(partial, { recursive: true, force: true });
    await o.bootstrap(partial);
    await run('touch', [join(partial, COMPLETE)], { timeoutMs: 10_000 });
    await rm(cached, { recursive: true, force: true });
    await rename(partial, cached);
  } else {
    log.info({ cached }, `reusing the cached root (${o.name})`);
  }
  await rm(target, { recursive: true, force: true });
  await run('cp', ['-a', '--reflink=auto', cached, target], { timeoutMs: 1800_000 });
  await rm(join(target, COMPLETE), { force: true });
  return { cached, reused };
}
