import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkIntegrity, encodeSeal } from '../../src/state/seal.js';
import { requireSystem, Scratch } from '../helpers/system.js';

/** The loop device a data partition directory is mounted from. */
const deviceOf = (dir: string) => execFileSync('findmnt', ['-n', '-o', 'SOURCE', dir], { encoding: 'utf8' }).trim();
/** Bytes read from a block device so far (/sys/block/<dev>/stat, sectors read). */
const bytesReadFrom = (device: string) => Number(readFileSync(`/sys/block/${device.replace('/dev/', '')}/stat`, 'utf8').trim().split(/\s+/)[2]) * 512;

// Root: a data partition of its own (a loop device) whose reads are counted.
describe('checkIntegrity reads a state off the device once for both of its sums', () => {
  const s = new Scratch();
  let data: string;
  beforeAll(async () => {
    requireSystem(['losetup', 'mkfs.ext4', 'findmnt', 'cksum', 'dd']);
    data = await s.dataPartition('data', 96);
  });
  afterAll(() => s.cleanup());

  async function sealed(name: string, sha256?: string): Promise<string> {
    const image = randomBytes(24 << 20);
    const path = join(data, name);
    await writeFile(path, image);
    const imageCksum = Number(execFileSync('cksum', [path], { encoding: 'utf8' }).split(' ')[0]);
    const seal = {
      size: image.length,
      sha256: sha256 ?? createHash('sha256').update(image).digest('hex'),
      id: 'i',
      parent: '',
      session: '',
      created: 1,
      files: 1,
      space: 1,
    };
    await writeFile(path, Buffer.concat([image, encodeSeal(seal, { imageCksum })]));
    // Out of the page cache: what follows reads the device.
    execFileSync('sync', [path]);
    execFileSync('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']);
    return path;
  }

  it('a good state with cksum_fix: the file comes off the device once, and it is ok', async () => {
    const path = await sealed('good');
    const device = deviceOf(data);
    const before = bytesReadFrom(device);
    expect(await checkIntegrity(path)).toMatchObject({ ok: true });
    const read = bytesReadFrom(device) - before;
    const size = statSync(path).size;
    // A little more than the file at most: the file system's own blocks, the device's read-ahead.
    expect(read).toBeGreaterThanOrEqual(size * 0.99);
    expect(read).toBeLessThan(size * 1.25);
  });

  it('a seal whose cksum holds but whose sha256 is wrong still fails, by its sha256', async () => {
    const path = await sealed('wrong-sha', 'ab'.repeat(32));
    const r = await checkIntegrity(path);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.problem).toBe('checksum mismatch: the image is corrupt');
  });

  it('a byte flipped in the seal fails by the cksum the boot checks', async () => {
    const path = await sealed('seal-flip');
    const bytes = readFileSync(path);
    bytes[bytes.length - 10]! ^= 0x01;
    await writeFile(path, bytes);
    const r = await checkIntegrity(path);
    expect(r.ok).toBe(false);
  });
});
