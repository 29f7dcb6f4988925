/**
 * A test-side writer of the seal at the end of every state image, written
 * from docs/state-format.md alone, so that the initramfs is checked against
 * the format rather than against the runtime's own writer. Only the bits
 * of cksum_fix come from the runtime's solver (src/state/seal.ts); that the
 * whole file then has the cksum the format says is checked by this
 * machine's cksum in test/unit/seal.test.ts.
 */
import { execa } from 'execa';
import { createHash, randomUUID } from 'node:crypto';
import { appendFile, readFile } from 'node:fs/promises';
import { fixSealCksum } from '../../../src/state/seal.js';

export const SEAL_SIZE = 4096;
export const SEAL_MAGIC = 'cairn-state 1';

export interface SealFields {
  size: number;
  sha256: string;
  id: string;
  parent: string;
  session: string;
  created: number;
  files: number;
  /** Bytes the files took in the upper layer (blocks, not sizes); absent in states of older cairns. */
  space?: number;
  /** The image's cksum (as `cksum` prints it): the seal then has cksum_fix; absent in states of older cairns. */
  imageCksum?: number;
}

/** The 4096-byte seal: the magic line, key=value lines, end, newline padding. */
export function sealBlock(fields: SealFields): Buffer {
  const text = [
    SEAL_MAGIC,
    `size=${fields.size}`,
    `sha256=${fields.sha256}`,
    `id=${fields.id}`,
    `parent=${fields.parent}`,
    `session=${fields.session}`,
    `created=${fields.created}`,
    `files=${fields.files}`,
    ...(fields.space === undefined ? [] : [`space=${fields.space}`]),
    ...(fields.imageCksum === undefined ? [] : [`cksum_fix=${'0'.repeat(32)}`]),
    'end',
    '',
  ].join('\n');
  const bytes = Buffer.from(text);
  if (bytes.length > SEAL_SIZE) throw new Error('seal too large');
  const block = Buffer.concat([bytes, Buffer.alloc(SEAL_SIZE - bytes.length, '\n')]);
  if (fields.imageCksum !== undefined) fixSealCksum(block, fields.imageCksum, fields.size);
  return block;
}

/**
 * Seals a squashfs image in place; returns the fields written. With
 * CKSUM the seal has cksum_fix, for the image's cksum as this machine's
 * cksum prints it; without it the seal is an older cairn's.
 */
export async function sealImage(path: string, fields: Partial<SealFields> = {}, options: { cksum?: boolean } = {}): Promise<SealFields> {
  const image = await readFile(path);
  const imageCksum = options.cksum ? Number((await execa('cksum', [path])).stdout.split(' ')[0]) : undefined;
  const seal: SealFields = {
    size: image.length,
    sha256: createHash('sha256').update(image).digest('hex'),
    id: randomUUID(),
    parent: '',
    session: '',
    created: Math.floor(Date.now() / 1000),
    files: 0,
    imageCksum,
    ...fields,
  };
  await appendFile(path, sealBlock(seal));
  return seal;
}
