/**
 * An encrypted (LUKS2) data partition, written into an image file without
 * device-mapper: build machines (containers, CI runners) often have none,
 * and nothing needs to be opened to fill a new volume.
 *
 * cryptsetup writes the header into a file of its own, given a random
 * volume key; the payload (the ext4 image) is then encrypted here exactly as
 * dm-crypt would: aes-xts-plain64, 512-byte sectors, the IV the sector
 * number counted from the start of the payload. The initramfs opens the
 * result with an ordinary `cryptsetup open`.
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UsageError } from '../lib/errors.js';
import { withTempDir } from '../lib/resources.js';
import { run } from '../lib/run.js';

export const LUKS = {
  cipher: 'aes-xts-plain64',
  /** aes-256-xts takes two 256-bit keys. */
  keyBits: 512,
  sectorBytes: 512,
  /** cryptsetup's own LUKS2 data offset: room for both metadata copies and 32 keyslots. */
  headerBytes: 16 << 20,
} as const;

/** How the passphrase becomes the key that opens the keyslot. */
export type LuksKdf = Argon2idKdf | { type: 'pbkdf2'; iterations: number };

export interface Argon2idKdf {
  type: 'argon2id';
  /** The time the derivation takes on the build machine; slower machines take longer. */
  iterTimeMs: number;
  /** The memory it needs, in KiB, also when unlocking in the initramfs. */
  memoryKiB: number;
}

/**
 * Built sticks: cryptsetup's argon2id and its 2 s, with the memory capped at
 * 256 MiB. Uncapped, cryptsetup takes up to 1 GiB (half the build machine's
 * RAM), which a stick's initramfs on a smaller machine could not get.
 */
export const STICK_KDF: Argon2idKdf = { type: 'argon2id', iterTimeMs: 2000, memoryKiB: 256 * 1024 };

export interface LuksVolumeOptions {
  /** The plain payload (an ext4 image); its size is a multiple of 512 bytes. */
  plain: string;
  /** The file the volume is written into (an image file, already large enough). */
  target: string;
  /** Where in it the volume starts (the partition's first byte). */
  offsetBytes: number;
  passphrase: string;
  /** The LUKS2 label: the initramfs finds the partition by it. */
  label: string;
  kdf: LuksKdf;
}

/** Bytes encrypted per read and write: a multiple of the sector, small beside any RAM. */
const CHUNK_BYTES = 4 << 20;

/**
 * Writes a LUKS2 volume holding PLAIN into TARGET at OFFSETBYTES: the header,
 * then the payload encrypted chunk by chunk. The volume key is random, is
 * written only to a 0600 file in a private temp directory for luksFormat,
 * and that directory is removed afterwards whatever happens.
 */
export async function writeLuksVolume(o: LuksVolumeOptions): Promise<void> {
  if (!o.passphrase) throw new UsageError('the passphrase is empty');
  const plainBytes = (await stat(o.plain)).size;
  if (plainBytes % LUKS.sectorBytes !== 0) throw new Error(`${o.plain} is ${plainBytes} bytes, not whole 512-byte sectors`);
  const key = randomBytes(LUKS.keyBits / 8);
  try {
    await withTempDir('.cairn-luks-', async (dir) => {
      const keyFile = join(dir, 'volume.key');
      const header = join(dir, 'header');
      await writeFile(keyFile, key, { mode: 0o600, flag: 'wx' });
      // Exactly the header's size: cryptsetup says the file is too small
      // to activate, which is true and harmless; the payload goes in later.
      await writeFile(header, '', { mode: 0o600, flag: 'wx' });
      await run('truncate', ['-s', String(LUKS.headerBytes), header], { timeoutMs: 10_000 });
      await run('cryptsetup', [
        'luksFormat', '--batch-mode', '--type', 'luks2', '--label', o.label,
        '--cipher', LUKS.cipher, '--key-size', String(LUKS.keyBits), '--sector-size', String(LUKS.sectorBytes),
        '--offset', String(LUKS.headerBytes / 512),
        ...kdfArgs(o.kdf),
        '--volume-key-file', keyFile, '--key-file', '-', header,
      ], { input: o.passphrase, timeoutMs: 300_000, hint: 'install cryptsetup (apt-get install cryptsetup-bin)' });
      await checkDataOffset(header);
      await copyInto(await readFile(header), o.target, o.offsetBytes);
    });
    await encryptInto(o.plain, plainBytes, key, o.target, o.offsetBytes + LUKS.headerBytes);
  } finally {
    key.fill(0);
  }
}

function kdfArgs(kdf: LuksKdf): string[] {
  return kdf.type === 'argon2id'
    ? ['--pbkdf', 'argon2id', '--iter-time', String(kdf.iterTimeMs), '--pbkdf-memory', String(kdf.memoryKiB)]
    : ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', String(kdf.iterations)];
}

/** The payload is encrypted for this offset: a cryptsetup that chose another would make an unreadable volume. */
async function checkDataOffset(header: string): Promise<void> {
  const { stdout } = await run('cryptsetup', ['luksDump', header], { timeoutMs: 30_000 });
  const m = /Data segments:\s+0: crypt\s+offset: (\d+) \[bytes\]/.exec(stdout);
  if (!m || Number(m[1]) !== LUKS.headerBytes) throw new Error(`cryptsetup put the LUKS payload elsewhere than ${LUKS.headerBytes} bytes in:\n${stdout}`);
}

async function copyInto(data: Buffer, target: string, at: number): Promise<void> {
  const fh = await open(target, 'r+');
  try {
    await fh.write(data, 0, data.length, at);
  } finally {
    await fh.close();
  }
}

/** dm-crypt's aes-xts-plain64: each 512-byte sector on its own, the tweak its number (little-endian, 64 bits). */
async function encryptInto(plain: string, bytes: number, key: Buffer, target: string, at: number): Promise<void> {
  const input = await open(plain, 'r');
  const output = await open(target, 'r+');
  const chunk = Buffer.alloc(CHUNK_BYTES);
  const sealed = Buffer.alloc(CHUNK_BYTES);
  const iv = Buffer.alloc(16);
  try {
    for (let pos = 0; pos < bytes; pos += CHUNK_BYTES) {
      const length = Math.min(CHUNK_BYTES, bytes - pos);
      const { bytesRead } = await input.read(chunk, 0, length, pos);
      if (bytesRead !== length) throw new Error(`${plain} ended at ${pos + bytesRead} bytes, expected ${bytes}`);
      for (let off = 0; off < length; off += LUKS.sectorBytes) {
        iv.fill(0);
        iv.writeBigUInt64LE(BigInt((pos + off) / LUKS.sectorBytes), 0);
        const cipher = createCipheriv('aes-256-xts', key, iv);
        cipher.update(chunk.subarray(off, off + LUKS.sectorBytes)).copy(sealed, off);
        cipher.final();
      }
      await output.write(sealed, 0, length, at + pos);
    }
  } finally {
    chunk.fill(0);
    await input.close();
    await output.close();
  }
}

