/**
 * A test-side writer of the seal at the end of every state image, written
 * from docs/state-format.md alone, so that the initramfs is checked against
 * the format rather than against the runtime's own writer.
 */
import { createHash, randomUUID } from 'node:crypto';
import { appendFile, readFile } from 'node:fs/promises';

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
    'end',
    '',
  ].join('\n');
  const bytes = Buffer.from(text);
  if (bytes.length > SEAL_SIZE) throw new Error('seal too large');
  return Buffer.concat([bytes, Buffer.alloc(SEAL_SIZE - bytes.length, '\n')]);
}

/** Seals a squashfs image in place; returns the fields written. */
export async function sealImage(path: string, fields: Partial<SealFields> = {}): Promise<SealFields> {
  const image = await readFile(path);
  const seal: SealFields = {
    size: image.length,
    sha256: createHash('sha256').update(image).digest('hex'),
    id: randomUUID(),
    parent: '',
    session: '',
    created: Math.floor(Date.now() / 1000),
    files: 0,
    ...fields,
  };
  await appendFile(path, sealBlock(seal));
  return seal;
}
