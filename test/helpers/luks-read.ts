/**
 * Reads an encrypted data partition from the host without device-mapper, as
 * a user with the passphrase could: cryptsetup recovers the volume key from
 * the header, and the payload is decrypted here with node:crypto as dm-crypt
 * does for aes-xts-plain64 (every 512-byte sector alone, its number the
 * tweak), written out independently of cairn's own writer.
 */
import { execa } from 'execa';
import { createDecipheriv } from 'node:crypto';
import { open, writeFile } from 'node:fs/promises';
import { LUKS } from '../../src/image/luks.js';

/** The volume key, from the LUKS header at the start of a partition's bytes in `image`. */
export async function volumeKey(header: string, passphrase: string): Promise<Buffer> {
  const dump = await execa('cryptsetup', ['luksDump', '--dump-volume-key', '--batch-mode', '--key-file', '-', header], { input: passphrase });
  const hex = /MK dump:\s+((?:[0-9a-f]{2}\s+)+)/.exec(dump.stdout)?.[1]?.replace(/\s+/g, '');
  if (hex?.length !== 128) throw new Error(`no 512-bit volume key in cryptsetup's dump:\n${dump.stdout}`);
  return Buffer.from(hex, 'hex');
}

/** Copies the LUKS header of the partition at `start` (bytes) of `image` into `header`. */
export async function extractHeader(image: string, start: number, header: string): Promise<void> {
  const fh = await open(image, 'r');
  try {
    const bytes = Buffer.alloc(LUKS.headerBytes);
    await fh.read(bytes, 0, bytes.length, start);
    await writeFile(header, bytes);
  } finally {
    await fh.close();
  }
}

/** Decrypts the payload of the partition at `start` (bytes, `length` long) into the file `out`. */
export async function decryptPayload(image: string, start: number, length: number, key: Buffer, out: string): Promise<void> {
  const payload = length - LUKS.headerBytes;
  const sealed = Buffer.alloc(payload);
  const fh = await open(image, 'r');
  try {
    await fh.read(sealed, 0, payload, start + LUKS.headerBytes);
  } finally {
    await fh.close();
  }
  const plain = Buffer.alloc(payload);
  const iv = Buffer.alloc(16);
  for (let s = 0; s * 512 < payload; s++) {
    iv.fill(0);
    iv.writeBigUInt64LE(BigInt(s));
    const d = createDecipheriv('aes-256-xts', key, iv);
    d.update(sealed.subarray(s * 512, s * 512 + 512)).copy(plain, s * 512);
    d.final();
  }
  await writeFile(out, plain);
}
