import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { log } from '../lib/log.js';
import { run } from '../lib/run.js';

/** Marks a cached root whose bootstrap ran to its end; a root without it is never used. */
const COMPLETE = '.cairn-complete';

export interface CachedRootOptions {
  cacheDir: string;
  /** The first part of the cached root's name, e.g. `debian-bookworm`. */
  name: string;
  /** Everything the root depends on (release, mirror, packages): another value, another root. */
  key: unknown;
  /** Makes the root in `partial` (a fresh, empty path). */
  bootstrap: (partial: string) => Promise<void>;
}

/**
 * A bootstrapped root, made once per key and kept under `<cache>/roots`: a
 * second build copies it instead of downloading and installing again. A
 * bootstrap that fails or is killed leaves a `.partial` directory that the
 * next build removes, never a root that looks complete.
 */
export async function cachedRoot(o: CachedRootOptions, target: string): Promise<{ cached: string; reused: boolean }> {
  const digest = createHash('sha256').update(JSON.stringify(o.key)).digest('hex').slice(0, 16);
  const cached = join(o.cacheDir, 'roots', `${o.name}-${digest}`);
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
