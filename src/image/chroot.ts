import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { log } from '../lib/log.js';
import { run, type RunOptions } from '../lib/run.js';

/**
 * Runs `fn` with /proc, /sys and /dev mounted in `root` (and the given bind
 * mounts), and with services kept from starting while packages install.
 * Everything is undone afterwards, also when `fn` throws.
 */
export async function withChroot<T>(root: string, binds: { from: string; to: string }[], fn: () => Promise<T>): Promise<T> {
  const mounted: string[] = [];
  const policy = join(root, 'usr/sbin/policy-rc.d');
  try {
    for (const [args, at] of [
      [['-t', 'proc', 'proc'], 'proc'],
      [['-t', 'sysfs', 'sysfs'], 'sys'],
      [['--bind', '/dev'], 'dev'],
      ...binds.map((b) => [['--bind', b.from], b.to] as [string[], string]),
    ] as [string[], string][]) {
      const target = join(root, at);
      await mkdir(target, { recursive: true });
      await run('mount', [...args, target], { timeoutMs: 30_000 });
      mounted.push(target);
    }
    // Debian's way of saying "start no services here" (invoke-rc.d reads it).
    await writeFile(policy, '#!/bin/sh\nexit 101\n', { mode: 0o755 });
    return await fn();
  } finally {
    await rm(policy, { force: true });
    for (const target of mounted.reverse()) {
      await run('umount', ['--lazy', target], { timeoutMs: 30_000 }).catch((e) =>
        log.warn({ target, error: (e as Error).message }, 'could not unmount'),
      );
    }
  }
}

export function inChroot(root: string, argv: string[], options: Partial<RunOptions> = {}) {
  return run('chroot', [root, ...argv], {
    timeoutMs: 1800_000,
    ...options,
    env: { DEBIAN_FRONTEND: 'noninteractive', LC_ALL: 'C', PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...options.env },
  });
}
