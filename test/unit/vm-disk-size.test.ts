/**
 * `cairn vm --disk-size`: the size a user types, the copy's name beside the
 * image, and the copy itself (made once, grown, reused; never the image).
 */
import { mkdtempSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PathError, UsageError } from '../../src/lib/errors.js';
import { grownCopy, grownCopyPath, parseDiskSize } from '../../src/vm/diskSize.js';

const dir = mkdtempSync(join(tmpdir(), 'cairn-disk-size-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('parseDiskSize', () => {
  it.each([
    ['16G', 16 * 2 ** 30],
    ['64000M', 64000 * 2 ** 20],
    ['2T', 2 * 2 ** 40],
    ['512k', 512 * 2 ** 10],
    ['3GiB', 3 * 2 ** 30],
    ['1048576', 2 ** 20],
  ])('%s is %d bytes', (size, bytes) => {
    expect(parseDiskSize(size)).toBe(bytes);
  });

  it.each(['', '0', '16 G', '-1G', '1.5G', '16X', 'G', '1000', '8P', '16G; rm -rf /'])('refuses "%s"', (size) => {
    expect(() => parseDiskSize(size)).toThrow(UsageError);
  });
});

describe('grownCopyPath', () => {
  it('names the copy for the size, beside the image', () => {
    expect(grownCopyPath('/srv/cairn.img', '16G')).toBe('/srv/cairn-16G.img');
    expect(grownCopyPath('/srv/cairn.img', '3gib')).toBe('/srv/cairn-3G.img');
    expect(grownCopyPath('stick', '2T')).toBe('stick-2T.img');
  });
});

describe('grownCopy', () => {
  const image = join(dir, 'cairn.img');
  writeFileSync(image, Buffer.alloc(4 << 20, 7));

  it('makes a sparse copy grown to the size, leaves the image as it is, and reuses the copy the next time', async () => {
    const first = await grownCopy(image, '64M');
    expect(first).toEqual({ path: join(dir, 'cairn-64M.img'), bytes: 64 << 20, made: true });
    expect(statSync(first.path).size).toBe(64 << 20);
    // Sparse: the 60 MiB past the image's end take no blocks.
    expect(statSync(first.path).blocks * 512).toBeLessThan(8 << 20);
    expect(statSync(image).size).toBe(4 << 20);
    writeFileSync(first.path, 'what the guest saved', { flag: 'r+' });
    const again = await grownCopy(image, '64M');
    expect(again.made).toBe(false);
    expect(statSync(again.path).size).toBe(64 << 20);
  });

  it('refuses a stick smaller than the image, and a file of another size in the way', async () => {
    await expect(grownCopy(image, '2M')).rejects.toThrow(/smaller than the image/);
    writeFileSync(join(dir, 'cairn-32M.img'), 'not a stick');
    await expect(grownCopy(image, '32M')).rejects.toThrow(PathError);
    mkdirSync(join(dir, 'cairn-48M.img'));
    await expect(grownCopy(image, '48M')).rejects.toThrow(/not a file/);
  });
});
