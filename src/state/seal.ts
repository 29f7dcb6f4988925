import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { Stats } from 'node:fs';
import { lstat, open } from 'node:fs/promises';
import { SEAL } from '../names.js';

/**
 * The seal at the end of a state image (docs/state-format.md): the image's
 * checksum travels inside the same file, so one rename moves both.
 */
export interface Seal {
  size: number;
  sha256: string;
  id: string;
  parent: string;
  session: string;
  created: number;
  files: number;
  /**
   * Bytes the files took in the upper layer they were saved from, by their
   * blocks (a sparse file counts for its data): what the initramfs checks a
   * state against before unpacking it. 0 when unknown (older states).
   */
  space: number;
}

const FIELDS = ['size', 'sha256', 'id', 'parent', 'session', 'created', 'files', 'space'] as const;

export function encodeSeal(seal: Seal): Buffer {
  const lines = [SEAL.magic, ...FIELDS.map((k) => `${k}=${seal[k]}`), 'end', ''];
  const text = lines.join('\n');
  for (const k of FIELDS) {
    if (/[\n=]/.test(String(seal[k])) && k !== 'sha256') throw new Error(`seal field ${k} holds a newline or '='`);
  }
  if (Buffer.byteLength(text) > SEAL.size) throw new Error('seal too large');
  // Newline padding keeps the block plain text for busybox tools.
  return Buffer.concat([Buffer.from(text), Buffer.alloc(SEAL.size - Buffer.byteLength(text), '\n')]);
}

/**
 * Parses a seal block; returns a reason instead when it is not one. As strict
 * as the initramfs (initramfs/lib/state.sh seal_fields), so that cairn verify
 * and a boot never disagree about an image.
 */
export function decodeSeal(block: Buffer): Seal | { problem: string } {
  const lines = block.toString('latin1').split('\n');
  if (lines[0] !== SEAL.magic) return { problem: 'no cairn seal at the end (not a saved state, or truncated)' };
  const end = lines.indexOf('end');
  if (end < 0) return { problem: 'the seal is incomplete' };
  if (lines.slice(end + 1).some((l) => l !== '')) return { problem: 'the seal has data after its end' };
  const map = new Map<string, string>();
  for (const line of lines.slice(1, end)) {
    const m = /^([a-z][^=]*)=(.*)$/.exec(line);
    if (!m) return { problem: `the seal has a malformed line "${line.slice(0, 40)}"` };
    // Which of two values counts is a guess one reader could make unlike the other.
    if (map.has(m[1]!)) return { problem: 'the seal has duplicate keys' };
    map.set(m[1]!, m[2]!);
  }
  const num = (k: string) => (/^(0|[1-9][0-9]*)$/.test(map.get(k) ?? '') ? Number(map.get(k)) : NaN);
  const size = num('size');
  const sha256 = map.get('sha256') ?? '';
  if (!Number.isSafeInteger(size) || size <= 0) return { problem: 'the seal has no valid size' };
  if (!/^[0-9a-f]{64}$/.test(sha256)) return { problem: 'the seal has no valid checksum' };
  return {
    size,
    sha256,
    id: map.get('id') ?? '',
    parent: map.get('parent') ?? '',
    session: map.get('session') ?? '',
    created: num('created') || 0,
    files: num('files') || 0,
    space: num('space') || 0,
  };
}

export type SealCheck =
  | { ok: true; seal: Seal; fileSize: number }
  | { ok: false; problem: string; seal?: Seal; fileSize: number };

/**
 * Why the entry at a state's name is not a state image, or undefined for a
 * regular file. The initramfs says the same (state.sh state_check). A
 * symbolic link is never followed: at boot it would resolve inside the
 * initramfs, not on the data partition, and a save must not write or
 * remove through it.
 */
export function notAStateImage(st: Stats): string | undefined {
  if (st.isFile()) return undefined;
  const kind = st.isDirectory() ? 'a directory' : st.isSymbolicLink() ? 'a symbolic link' : 'a special file';
  return `${kind}, not a state image`;
}

/** Reads and parses the seal without reading the image: cheap enough for listings. */
export async function readSeal(path: string): Promise<SealCheck> {
  const st = await lstat(path);
  const fileSize = st.size;
  const odd = notAStateImage(st);
  if (odd) return { ok: false, problem: odd, fileSize };
  if (fileSize <= SEAL.size) return { ok: false, problem: `too short (${fileSize} bytes) to hold a state`, fileSize };
  const fh = await open(path, 'r');
  const block = Buffer.alloc(SEAL.size);
  try {
    await fh.read(block, 0, SEAL.size, fileSize - SEAL.size);
  } finally {
    await fh.close();
  }
  const seal = decodeSeal(block);
  if ('problem' in seal) return { ok: false, problem: seal.problem, fileSize };
  if (seal.size + SEAL.size !== fileSize) {
    return { ok: false, problem: `truncated or extended: ${fileSize} bytes, the seal says ${seal.size + SEAL.size}`, seal, fileSize };
  }
  return { ok: true, seal, fileSize };
}

/** The sha256 of the first `size` bytes of a file (or of a block device). */
export async function sha256Of(path: string, size: number): Promise<string> {
  const hash = createHash('sha256');
  if (size > 0) {
    const stream = createReadStream(path, { start: 0, end: size - 1, highWaterMark: 1 << 20 });
    for await (const chunk of stream) hash.update(chunk as Buffer);
  }
  return hash.digest('hex');
}

/** Seal and checksum: whether the initramfs would accept this image. */
export async function checkIntegrity(path: string): Promise<SealCheck> {
  const read = await readSeal(path);
  if (!read.ok) return read;
  const actual = await sha256Of(path, read.seal.size);
  if (actual !== read.seal.sha256) {
    return { ok: false, problem: 'checksum mismatch: the image is corrupt', seal: read.seal, fileSize: read.fileSize };
  }
  return read;
}
