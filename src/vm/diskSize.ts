/**
 * `cairn vm --disk-size`: the image as it would be on a larger stick. The
 * image itself is never changed: a sparse copy beside it, named for the
 * size, is made once and grown, and later runs boot the same copy, so what
 * its guest saved is there the next time, as on a stick.
 */
import { existsSync } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { PathError, UsageError } from '../lib/errors.js';
import { formatBytes } from '../lib/format.js';
import { run } from '../lib/run.js';

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/** SIZE ("16G", "64000M", "2T", bytes without a unit) in bytes, a whole number of 512-byte sectors. */
export function parseDiskSize(size: string): number {
  const m = /^([1-9][0-9]*)([KMGT]?)(?:i?B)?$/i.exec(size.trim());
  if (!m) throw new UsageError(`--disk-size "${size}" is not a size like 16G, 64000M or 2T`);
  const bytes = Number(m[1]) * UNITS[m[2]!.toUpperCase()]!;
  if (!Number.isSafeInteger(bytes) || bytes % 512 !== 0) throw new UsageError(`--disk-size "${size}" is not a whole number of 512-byte sectors`);
  return bytes;
}

/** Where the copy of IMAGE grown to SIZE lives: cairn.img and 16G give cairn-16G.img beside it. */
export function grownCopyPath(image: string, size: string): string {
  const name = basename(image).replace(/\.img$/, '');
  return join(dirname(image), `${name}-${size.trim().toUpperCase().replace(/I?B$/, '')}.img`);
}

export interface GrownCopy {
  path: string;
  bytes: number;
  /** false when an earlier run made it. */
  made: boolean;
}

/**
 * The copy of IMAGE at SIZE bytes: made (sparse copy, then grown past the
 * image's end, as a larger stick is) unless it is there already. A stick
 * smaller than the image cannot hold it.
 */
export async function grownCopy(image: string, size: string): Promise<GrownCopy> {
  const bytes = parseDiskSize(size);
  const imageBytes = (await stat(image)).size;
  if (bytes < imageBytes) {
    throw new UsageError(`--disk-size ${size} (${formatBytes(bytes)}) is smaller than the image (${formatBytes(imageBytes)}): a stick that small cannot hold it`);
  }
  const path = grownCopyPath(image, size);
  if (existsSync(path)) {
    const st = await stat(path);
    if (!st.isFile()) throw new PathError(path, 'is in the way of the grown copy and is not a file');
    if (st.size !== bytes) throw new PathError(path, `is ${formatBytes(st.size)}, not the ${formatBytes(bytes)} of --disk-size ${size}`, 'remove it to make a new copy');
    return { path, bytes, made: false };
  }
  // Made under a temp name: a copy cut short is never booted as the stick.
  const partial = `${path}.partial`;
  await rm(partial, { force: true });
  try {
    await run('cp', ['--sparse=always', image, partial], { timeoutMs: 1800_000 });
    await run('truncate', ['-s', String(bytes), partial], { timeoutMs: 60_000 });
    await rename(partial, path);
  } catch (e) {
    await rm(partial, { force: true });
    throw e;
  }
  return { path, bytes, made: true };
}
