import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync, writeSync, fsyncSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../src/config.js';
import { VerifyMismatchError } from '../../src/lib/errors.js';
import { DATA } from '../../src/names.js';
import { runSave, type SaveOptions } from '../../src/save/pipeline.js';
import { requireSystem, Scratch } from '../helpers/system.js';

/** The loop device a data partition directory is mounted from. */
const deviceOf = (dir: string) => execFileSync('findmnt', ['-n', '-o', 'SOURCE', dir], { encoding: 'utf8' }).trim();
/** Bytes read from a block device so far (/sys/block/<dev>/stat, sectors read). */
const bytesReadFrom = (device: string) => Number(readFileSync(`/sys/block/${device.replace('/dev/', '')}/stat`, 'utf8').trim().split(/\s+/)[2]) * 512;

/** Where byte OFFSET of FILE lies on the device under its file system (filefrag's extents, in 4 KiB blocks). */
function physicalOffset(file: string, offset: number): number {
  const out = execFileSync('filefrag', ['-e', '-b4096', file], { encoding: 'utf8' });
  for (const m of out.matchAll(/^\s*\d+:\s+(\d+)\.\.\s*(\d+):\s+(\d+)\.\./gm)) {
    const [first, last, physical] = [Number(m[1]), Number(m[2]), Number(m[3])];
    const block = Math.floor(offset / 4096);
    if (block >= first && block <= last) return (physical + block - first) * 4096 + (offset % 4096);
  }
  throw new Error(`no extent of ${file} holds byte ${offset}:\n${out}`);
}

describe('the verification reads the image from the device', () => {
  const s = new Scratch();
  let upper: string;
  // Two files of a batch each (compare.ts): one for each of the verification's two lanes.
  const blobs = [randomBytes(9 << 20), randomBytes(9 << 20)];

  beforeAll(async () => {
    requireSystem(['mksquashfs', 'losetup', 'mkfs.ext4', 'filefrag', 'findmnt', 'cksum']);
    upper = s.path('upper');
    await mkdir(join(upper, 'home/user'), { recursive: true });
    // Random bytes: mksquashfs stores them as they are, so they can be found in the image.
    for (const [i, blob] of blobs.entries()) await writeFile(join(upper, `home/user/blob${i}`), blob);
    await writeFile(join(upper, 'home/user/note'), 'a note\n'.repeat(1000));
  });
  afterAll(() => s.cleanup());

  const save = (data: string, onPhase?: SaveOptions['onPhase']) =>
    runSave({
      upperDir: upper,
      dataDir: data,
      bootRecord: undefined,
      session: 'test',
      config: { ...DEFAULTS, excludes: [...DEFAULTS.excludes] },
      confirmCleanSave: async () => false,
      onPhase,
    });

  it('a byte flipped on the device under a good page cache fails the save, and names the file', async () => {
    const data = await s.dataPartition('flip', 64);
    const device = deviceOf(data);
    const error = await save(data, (phase) => {
      if (phase !== 'verifying') return;
      // The image is fsynced; its page cache still holds what mksquashfs wrote.
      const temp = join(data, DATA.temp);
      const image = readFileSync(temp);
      const fd = openSync(device, 'r+');
      try {
        for (const blob of blobs) {
          const at = image.indexOf(blob.subarray(2 << 20, (2 << 20) + 64));
          expect(at).toBeGreaterThan(0);
          const byte = Buffer.alloc(1);
          const where = physicalOffset(temp, at + 10);
          readSync(fd, byte, 0, 1, where);
          byte[0]! ^= 0x10;
          writeSync(fd, byte, 0, 1, where);
        }
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(VerifyMismatchError);
    const message = (error as VerifyMismatchError).message;
    expect(message).toMatch(/\/home\/user\/blob0: contents/);
    expect(message).toMatch(/\/home\/user\/blob1: contents/);
  });

  it('reads the image off the data partition once, for its checksums and its comparison together', async () => {
    const data = await s.dataPartition('once', 64);
    const device = deviceOf(data);
    let before = 0;
    let read = 0;
    const report = await save(data, (phase) => {
      if (phase === 'verifying') before = bytesReadFrom(device);
      if (phase === 'sealing') read = bytesReadFrom(device) - before;
    });
    expect(report.bytes).toBeGreaterThan(18 << 20);
    // A little more than the image: the file system's own blocks, the device's read-ahead.
    expect(read).toBeLessThan(report.bytes * 1.25);
    expect(read).toBeGreaterThanOrEqual(report.bytes);
  });
});
