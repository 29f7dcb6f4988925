import { mkdtemp, readFile, readdir, rm, mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cachedRoot, withCacheLock } from '../../src/image/rootCache.js';

/** Two image builds sharing a cache, as two test files or two users on one build machine run them. */
describe('cachedRoot', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-rootcache-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  const slowBootstrap = (calls: string[], name: string) => async (partial: string) => {
    calls.push(name);
    await mkdir(partial, { recursive: true });
    // Long enough that the other build asks for the root while this one makes it.
    await new Promise((r) => setTimeout(r, 1500));
    await writeFile(join(partial, 'made-by'), name);
  };

  it('makes a root once when two builds ask for it at the same time; both get it whole', async () => {
    const calls: string[] = [];
    const cacheDir = join(dir, 'cache');
    const ask = (name: string) =>
      cachedRoot({ cacheDir, name: 'debian-bookworm', key: ['same'], bootstrap: slowBootstrap(calls, name) }, join(dir, `target-${name}`));
    const [a, b] = await Promise.all([ask('a'), ask('b')]);
    expect(calls).toHaveLength(1);
    expect([a.reused, b.reused].sort()).toEqual([false, true]);
    expect(await readFile(join(dir, 'target-a', 'made-by'), 'utf8')).toBe(calls[0]);
    expect(await readFile(join(dir, 'target-b', 'made-by'), 'utf8')).toBe(calls[0]);
    // Neither a partial root nor a lock is left behind.
    expect((await readdir(join(cacheDir, 'roots'))).filter((f) => !/^debian-bookworm-[0-9a-f]{16}$/.test(f))).toEqual([]);
  });

  it('makes one root per key, and a root inside another reuses the inner one', async () => {
    const calls: string[] = [];
    const cacheDir = join(dir, 'cache');
    const base = (partial: string) =>
      cachedRoot({ cacheDir, name: 'base', key: ['base'], bootstrap: slowBootstrap(calls, 'base') }, partial);
    const withPackages = (pkg: string) =>
      cachedRoot(
        {
          cacheDir,
          name: 'full',
          key: ['base', pkg],
          bootstrap: async (partial) => {
            await base(partial);
            calls.push(pkg);
            await writeFile(join(partial, 'package'), pkg);
          },
        },
        join(dir, `target-${pkg}`),
      );
    await Promise.all([withPackages('kernel-a'), withPackages('kernel-b')]);
    expect(calls.filter((c) => c === 'base')).toHaveLength(1);
    expect(calls.filter((c) => c !== 'base').sort()).toEqual(['kernel-a', 'kernel-b']);
    for (const pkg of ['kernel-a', 'kernel-b']) {
      expect(await readFile(join(dir, `target-${pkg}`, 'package'), 'utf8')).toBe(pkg);
      expect(await readFile(join(dir, `target-${pkg}`, 'made-by'), 'utf8')).toBe('base');
    }
  });

  it('two bootstraps of different package sets take turns on the shared package archive (apt-get refuses a held one)', async () => {
    const debs = join(dir, 'debs');
    await mkdir(debs);
    const events: string[] = [];
    const install = (name: string) =>
      withCacheLock(debs, async () => {
        events.push(`${name} start`);
        await new Promise((r) => setTimeout(r, 300));
        events.push(`${name} end`);
      });
    await Promise.all([install('a'), install('b')]);
    // Each install ends before the other starts.
    const first = events[0]!.split(' ')[0]!;
    const second = first === 'a' ? 'b' : 'a';
    expect(events).toEqual([`${first} start`, `${first} end`, `${second} start`, `${second} end`]);
    expect(await readdir(dir)).toEqual(['debs']);
  });
});
