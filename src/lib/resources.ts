import { mkdtemp, rm, rmdir } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { log } from './log.js';
import { retryTransient } from './retry.js';
import { run } from './run.js';

/** Acquire, use, release: a resource is given back even when `fn` throws. */

/** A temp directory under `parent` (the system's temp dir unless given), removed afterwards. */
export async function withTempDir<T>(prefix: string, fn: (dir: string) => Promise<T>, parent = tmpdir()): Promise<T> {
  const dir = await mkdtemp(join(parent, prefix));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * FN with one resource for each of ITEMS, acquired side by side by USE (a
 * with-function as above) and all given back after FN. When one cannot be
 * acquired, those that were are given back and its error is thrown.
 */
export async function withEach<I, R, T>(
  items: readonly I[],
  use: (item: I, body: (resource: R) => Promise<void>) => Promise<void>,
  fn: (resources: R[]) => Promise<T>,
): Promise<T> {
  let giveBack!: () => void;
  const givenBack = new Promise<void>((resolve) => (giveBack = resolve));
  const resources: R[] = [];
  const acquired: Promise<void>[] = [];
  const held = items.map((item, i) => {
    let gotIt!: () => void;
    acquired.push(new Promise<void>((resolve) => (gotIt = resolve)));
    return use(item, async (resource) => {
      resources[i] = resource;
      gotIt();
      await givenBack;
    });
  });
  // Each one either acquired, or failed before it was.
  const outcomes = await Promise.allSettled(held.map((h, i) => Promise.race([acquired[i], h])));
  const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
  if (failed) {
    giveBack();
    await Promise.allSettled(held);
    throw failed.reason;
  }
  try {
    return await fn(resources);
  } finally {
    giveBack();
    await Promise.all(held);
  }
}

export interface LoopOptions {
  readOnly?: boolean;
  /**
   * Read the backing file with O_DIRECT, so what is read comes from the
   * device and not from the page cache the writer left behind.
   */
  directIo?: boolean;
}

export async function withLoopDevice<T>(file: string, options: LoopOptions, fn: (device: string) => Promise<T>): Promise<T> {
  const args = ['--find', '--show'];
  if (options.readOnly) args.push('--read-only');
  if (options.directIo) args.push('--direct-io=on');
  const { stdout } = await run('losetup', [...args, file], { timeoutMs: 30_000 });
  const device = stdout.trim();
  try {
    return await fn(device);
  } finally {
    await detachLoop(device);
  }
}

export async function detachLoop(device: string): Promise<void> {
  await retryTransient(`detach ${device}`, () => run('losetup', ['--detach', device], { timeoutMs: 30_000, cleanUp: true })).catch((e) =>
    log.warn({ device, error: (e as Error).message }, 'could not detach loop device'),
  );
}

/** Whether a loop device really reads its backing file with O_DIRECT. */
export function loopUsesDirectIo(device: string): boolean {
  try {
    return readFileSync(`/sys/block/${device.replace('/dev/', '')}/loop/dio`, 'utf8').trim() === '1';
  } catch {
    return false;
  }
}

export async function withMount<T>(
  source: string,
  target: string,
  options: { type: string; options?: string[] },
  fn: (target: string) => Promise<T>,
): Promise<T> {
  const args = ['-t', options.type];
  if (options.options?.length) args.push('-o', options.options.join(','));
  await run('mount', [...args, source, target], { timeoutMs: 60_000 });
  try {
    return await fn(target);
  } finally {
    await unmount(target);
  }
}

export async function unmount(target: string): Promise<void> {
  await retryTransient(`unmount ${target}`, () => run('umount', [target], { timeoutMs: 60_000, cleanUp: true }));
}

/** Mount points whose source is the given device, from /proc/self/mountinfo. */
export function mountsOf(device: string): string[] {
  const info = readFileSync('/proc/self/mountinfo', 'utf8');
  return info
    .split('\n')
    .map((line) => line.split(' '))
    .filter((f) => f.length > 9 && f[f.indexOf('-') + 2] === device)
    .map((f) => f[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
}

export async function removeEmptyDir(dir: string): Promise<void> {
  await rmdir(dir).catch(() => undefined);
}
