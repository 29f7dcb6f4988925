import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Bytes read from each path through createReadStream, the way seal.ts reads whole files. */
const bytesRead = new Map<string, number>();
vi.mock('node:fs', async (original) => {
  const real = await original<typeof import('node:fs')>();
  return {
    ...real,
    createReadStream: (path: string, options?: Parameters<typeof real.createReadStream>[1]) => {
      const stream = real.createReadStream(path, options);
      stream.on('data', (chunk) => bytesRead.set(String(path), (bytesRead.get(String(path)) ?? 0) + chunk.length));
      return stream;
    },
  };
});

const { checkIntegrity, Cksum, encodeSeal } = await import('../../src/state/seal.js');

describe('checkIntegrity reads a state once for both of its sums', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-seal-once-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function sealed(name: string, sha256?: string): Promise<string> {
    const image = randomBytes(3_000_000);
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
    const path = join(dir, name);
    await writeFile(path, Buffer.concat([image, encodeSeal(seal, { imageCksum: new Cksum().update(image).digest() })]));
    return path;
  }

  it('a good state with cksum_fix: every byte of the file read once, and it is ok', async () => {
    const path = await sealed('good');
    bytesRead.clear();
    expect((await checkIntegrity(path)).ok).toBe(true);
    expect(bytesRead.get(path)).toBe(fs.statSync(path).size);
  });

  it('a seal whose cksum holds but whose sha256 is wrong still fails, by its sha256', async () => {
    const path = await sealed('wrong-sha', 'ab'.repeat(32));
    const r = await checkIntegrity(path);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.problem).toBe('checksum mismatch: the image is corrupt');
  });
});
