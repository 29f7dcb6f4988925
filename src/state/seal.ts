import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { Stats } from 'node:fs';
import { lstat, open } from 'node:fs/promises';
import { SEAL } from '../names.js';
import { cksumTool, sumsOf } from './sums.js';

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
  /**
   * 32 characters 0 or 1, chosen when sealing so that the POSIX CRC of the
   * whole file, image and seal, is SEAL.cksum: the boot's check (one `cksum`
   * of the file, which covers the seal too). Absent in states of older cairns.
   */
  cksumFix?: string;
  /** 'delta' for a checkpoint delta (docs/state-format.md "Checkpoint deltas"); a whole state otherwise. */
  kind?: SealKind;
  /** A delta's: bytes of its removal list, the last of the `size` bytes. */
  removed?: number;
  /** A delta's: the ids of every link before it, the base first and its parent last. */
  chain?: string[];
}

export type SealKind = 'state' | 'delta';

const FIELDS = ['size', 'sha256', 'id', 'parent', 'session', 'created', 'files', 'space'] as const;
const FIX_KEY = 'cksum_fix';
const FIX_BITS = 32;

export interface EncodeOptions {
  /**
   * What `cksum` prints for the image (the seal.size bytes before the seal):
   * with it the seal gets its cksum_fix field, without it none.
   */
  imageCksum?: number;
}

export function encodeSeal(seal: Seal, options: EncodeOptions = {}): Buffer {
  for (const k of FIELDS) {
    if (/[\n=]/.test(String(seal[k])) && k !== 'sha256') throw new Error(`seal field ${k} holds a newline or '='`);
  }
  const delta = seal.kind === 'delta' ? deltaLines(seal) : [];
  const fix = options.imageCksum === undefined ? [] : [`${FIX_KEY}=${'0'.repeat(FIX_BITS)}`];
  const magic = seal.kind === 'delta' ? SEAL.deltaMagic : SEAL.magic;
  const text = [magic, ...FIELDS.map((k) => `${k}=${seal[k]}`), ...delta, ...fix, 'end', ''].join('\n');
  if (Buffer.byteLength(text) > SEAL.size) throw new Error('seal too large');
  // Newline padding keeps the block plain text for busybox tools.
  const block = Buffer.concat([Buffer.from(text), Buffer.alloc(SEAL.size - Buffer.byteLength(text), '\n')]);
  if (options.imageCksum !== undefined) fixSealCksum(block, options.imageCksum, seal.size);
  return block;
}

/** A delta's own fields: its removal list's length and the links it extends. */
function deltaLines(seal: Seal): string[] {
  const chain = seal.chain ?? [];
  if (!Number.isSafeInteger(seal.removed) || seal.removed! < 0 || seal.removed! >= seal.size) throw new Error('a delta seal needs its removal list\'s length');
  if (chain.length === 0 || chain.some((id) => !CHAIN_ID.test(id))) throw new Error('a delta seal needs the ids of the links it extends');
  if (chain[chain.length - 1] !== seal.parent) throw new Error('a delta\'s parent is the last link of its chain');
  return [`removed=${seal.removed}`, `chain=${chain.join(',')}`];
}

/** A link's id as a delta's chain names it: no separator, nothing the boot's shell could misread. */
const CHAIN_ID = /^[A-Za-z0-9_.:-]+$/;

export interface DecodeOptions {
  /**
   * Accept a checkpoint delta's seal. Without it a delta is not a state:
   * listings, rotation and status treat it as they treat any file that is
   * not one, as an initramfs that knows no deltas does.
   */
  deltas?: boolean;
}

/**
 * Sets the cksum_fix field of BLOCK, a seal holding it (any 32 characters 0
 * or 1), for an image of SIZE bytes whose cksum is IMAGECKSUM: the whole
 * file then has the cksum SEAL.cksum.
 */
export function fixSealCksum(block: Buffer, imageCksum: number, size: number): void {
  const key = Buffer.from(`\n${FIX_KEY}=`);
  const at = block.indexOf(key) + key.length;
  if (at < key.length || !/^[01]{32}\n$/.test(block.subarray(at, at + FIX_BITS + 1).toString('latin1'))) {
    throw new Error(`the seal holds no ${FIX_KEY} field to set`);
  }
  forceCksum(block, at, cksumRegister(imageCksum, size), size + block.length);
}

/*
 * POSIX cksum: CRC-32 with the polynomial 0x04C11DB7, most significant bit
 * first, over the bytes and then the length (least significant byte first,
 * as few bytes as it takes), complemented. GNU coreutils' cksum and
 * busybox's compute the same.
 */
const POLY = 0x04c11db7;
const TABLE = new Uint32Array(256);
/** The index of the table entry with each low byte: the way back one step. */
const BY_LOW_BYTE = new Uint8Array(256);
for (let i = 0; i < 256; i++) {
  let c = i << 24;
  for (let k = 0; k < 8; k++) c = c & 0x80000000 ? (c << 1) ^ POLY : c << 1;
  TABLE[i] = c >>> 0;
  BY_LOW_BYTE[c & 0xff] = i;
}
/** Slicing by 8: SLICES[k] is the table for a byte followed by k more (a byte at a time runs at about 100 MB/s). */
const SLICES = [TABLE];
for (let k = 1; k < 8; k++) {
  const prev = SLICES[k - 1]!;
  SLICES.push(new Uint32Array(256).map((_, i) => ((prev[i]! << 8) ^ TABLE[prev[i]! >>> 24]!) >>> 0));
}

function crcStep(reg: number, byte: number): number {
  return ((reg << 8) ^ TABLE[((reg >>> 24) ^ byte) & 0xff]!) >>> 0;
}

/** The CRC register before crcStep(_, BYTE) made NEXT. */
function crcUnstep(next: number, byte: number): number {
  const i = BY_LOW_BYTE[next & 0xff]!;
  return (((i ^ byte) << 24) | ((next ^ TABLE[i]!) >>> 8)) >>> 0;
}

function lengthBytes(length: number): number[] {
  const out: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) out.push(n % 256);
  return out;
}

/** The POSIX cksum of data fed in pieces, as `cksum` prints it. */
export class Cksum {
  private reg = 0;
  private length = 0;

  update(data: Uint8Array): this {
    const [t0, t1, t2, t3, t4, t5, t6, t7] = SLICES as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];
    let reg = this.reg;
    let i = 0;
    for (const end = data.length - 7; i < end; i += 8) {
      reg ^= (data[i]! << 24) | (data[i + 1]! << 16) | (data[i + 2]! << 8) | data[i + 3]!;
      reg =
        t7[reg >>> 24]! ^ t6[(reg >>> 16) & 0xff]! ^ t5[(reg >>> 8) & 0xff]! ^ t4[reg & 0xff]! ^
        t3[data[i + 4]!]! ^ t2[data[i + 5]!]! ^ t1[data[i + 6]!]! ^ t0[data[i + 7]!]!;
    }
    for (; i < data.length; i++) reg = crcStep(reg, data[i]!);
    this.reg = reg >>> 0;
    this.length += data.length;
    return this;
  }

  digest(): number {
    let reg = this.reg;
    for (const b of lengthBytes(this.length)) reg = crcStep(reg, b);
    return ~reg >>> 0;
  }
}

/** The CRC register after the bytes of a file whose cksum is VALUE and whose length is LENGTH. */
function cksumRegister(value: number, length: number): number {
  let reg = ~value >>> 0;
  for (const b of lengthBytes(length).reverse()) reg = crcUnstep(reg, b);
  return reg;
}

/** cksum of a file whose bytes before BLOCK left REG in the CRC register, and whose length is TOTAL. */
function cksumAfter(reg: number, block: Uint8Array, total: number): number {
  for (const b of block) reg = crcStep(reg, b);
  for (const b of lengthBytes(total)) reg = crcStep(reg, b);
  return ~reg >>> 0;
}

/**
 * Sets the FIX_BITS characters '0'/'1' at AT in BLOCK so that the file
 * (bytes leaving REG in the register, then BLOCK; TOTAL bytes) has the cksum
 * SEAL.cksum. The CRC is linear: flipping the low bit of one character
 * changes the cksum by a fixed word whatever the rest holds, so the
 * characters to flip are the solution of 32 equations over GF(2).
 */
function forceCksum(block: Buffer, at: number, reg: number, total: number): void {
  const base = cksumAfter(reg, block, total);
  const rows: { word: number; mask: number }[] = [];
  for (let i = 0; i < FIX_BITS; i++) {
    block[at + i]! ^= 1;
    rows.push({ word: (cksumAfter(reg, block, total) ^ base) >>> 0, mask: 2 ** i });
    block[at + i]! ^= 1;
  }
  // Gaussian elimination: for each bit of the word, one row holding it.
  const basis: { word: number; mask: number }[] = [];
  for (const row of rows) {
    let { word, mask } = row;
    for (const b of basis) {
      if ((word ^ b.word) >>> 0 < word) {
        word = (word ^ b.word) >>> 0;
        mask = mask ^ b.mask;
      }
    }
    if (word !== 0) basis.push({ word, mask });
    basis.sort((x, y) => y.word - x.word);
  }
  let want = (base ^ SEAL.cksum) >>> 0;
  let flip = 0;
  for (const b of basis) {
    if ((want ^ b.word) >>> 0 < want) {
      want = (want ^ b.word) >>> 0;
      flip ^= b.mask;
    }
  }
  if (want !== 0) throw new Error('the seal cksum could not be fixed');
  for (let i = 0; i < FIX_BITS; i++) if (flip & (2 ** i)) block[at + i]! ^= 1;
}

/**
 * Parses a seal block; returns a reason instead when it is not one. As strict
 * as the initramfs (initramfs/lib/state.sh seal_fields), so that cairn verify
 * and a boot never disagree about an image.
 */
export function decodeSeal(block: Buffer, options: DecodeOptions = {}): Seal | { problem: string } {
  const lines = block.toString('latin1').split('\n');
  const kind: SealKind | undefined = lines[0] === SEAL.magic ? 'state' : lines[0] === SEAL.deltaMagic ? 'delta' : undefined;
  if (kind === 'delta' && !options.deltas) return { problem: 'a checkpoint delta, not a whole state (it extends a state and is never unpacked alone)' };
  if (!kind) return { problem: 'no cairn seal at the end (not a saved state, or truncated)' };
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
  const fix = map.get(FIX_KEY);
  if (fix !== undefined && !/^[01]{32}$/.test(fix)) return { problem: `the seal has no valid ${FIX_KEY}` };
  let delta: Pick<Seal, 'kind' | 'removed' | 'chain'> = {};
  if (kind === 'delta') {
    const removed = num('removed');
    const chain = (map.get('chain') ?? '').split(',');
    if (!Number.isSafeInteger(removed) || removed >= size) return { problem: 'the delta seal has no valid removed' };
    if (fix === undefined) return { problem: `the delta seal has no ${FIX_KEY}` };
    if (chain.some((id) => !CHAIN_ID.test(id)) || chain[chain.length - 1] !== map.get('parent')) {
      return { problem: 'the delta seal has no valid chain (its parent last)' };
    }
    delta = { kind, removed, chain };
  }
  return {
    size,
    sha256,
    id: map.get('id') ?? '',
    parent: map.get('parent') ?? '',
    session: map.get('session') ?? '',
    created: num('created') || 0,
    files: num('files') || 0,
    space: num('space') || 0,
    ...(fix === undefined ? {} : { cksumFix: fix }),
    ...delta,
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
export async function readSeal(path: string, options: DecodeOptions = {}): Promise<SealCheck> {
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
  const seal = decodeSeal(block, options);
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

/** The POSIX cksum of a whole file, as `cksum FILE` prints it. */
export async function cksumOf(path: string): Promise<number> {
  return cksumTool(path, undefined, path);
}

/**
 * Seal and checksums: whether the initramfs would accept this image. The
 * boot checks the cksum of the whole file when the seal has cksum_fix, the
 * sha256 of the image otherwise; both are checked here, so a flipped bit
 * in the seal, which the sha256 does not cover, is found as the boot finds it.
 */
export async function checkIntegrity(path: string, options: DecodeOptions = {}): Promise<SealCheck> {
  const read = await readSeal(path, options);
  if (!read.ok) return read;
  const damaged = (problem: string): SealCheck => ({ ok: false, problem, seal: read.seal, fileSize: read.fileSize });
  if (read.seal.cksumFix !== undefined) {
    const sums = await sumsOf(path, read.seal.size);
    if (sums.cksum !== SEAL.cksum) return damaged('cksum mismatch: the image or its seal is corrupt');
    if (sums.sha256 !== read.seal.sha256) return damaged('checksum mismatch: the image is corrupt');
    return read;
  }
  const actual = await sha256Of(path, read.seal.size);
  if (actual !== read.seal.sha256) return damaged('checksum mismatch: the image is corrupt');
  return read;
}
