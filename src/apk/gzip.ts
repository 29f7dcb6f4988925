import * as zlib from 'node:zlib';
import { gzipSync, inflateRawSync } from 'node:zlib';

/**
 * An apk v2 package is gzip members laid end to end (RFC 1952 allows it). apk
 * reads them as one stream, but its signature and datahash checks work on the
 * compressed bytes of each member, cut exactly where zlib reports the end of
 * a member (apk-tools 2.14 src/io_gunzip.c, gzi_read: Z_STREAM_END hands
 * `cbprev..next_in` to the multipart callback, header to trailer included).
 */
export interface GzipMember {
  /** Offset of the member's first byte (the 1f 8b magic) in the whole file. */
  start: number;
  /** Offset just past the member's 8-byte trailer. */
  end: number;
  /** The member's compressed bytes, `file[start, end)`. */
  compressed: Buffer;
  /** What the member inflates to. */
  inflated: Buffer;
}

const FTEXT = 1;
const FHCRC = 2;
const FEXTRA = 4;
const FNAME = 8;
const FCOMMENT = 16;

/** Splits a file into its gzip members; anything that is not a whole member is an error. */
export function splitGzipMembers(file: Buffer): GzipMember[] {
  const members: GzipMember[] = [];
  let pos = 0;
  while (pos < file.length) {
    const headerLength = gzipHeaderLength(file, pos);
    let inflated: Buffer;
    let deflateLength: number;
    try {
      const result = inflateRawSync(file.subarray(pos + headerLength), { info: true }) as unknown as {
        buffer: Buffer;
        engine: { bytesWritten: number };
      };
      inflated = result.buffer;
      // Bytes the engine consumed: the deflate stream stops at its final block.
      deflateLength = result.engine.bytesWritten;
    } catch (e) {
      throw new GzipError(`gzip member at byte ${pos}: ${(e as Error).message}`);
    }
    const trailer = pos + headerLength + deflateLength;
    if (trailer + 8 > file.length) throw new GzipError(`gzip member at byte ${pos} has no trailer`);
    if (file.readUInt32LE(trailer) !== crc32(inflated)) throw new GzipError(`gzip member at byte ${pos}: CRC mismatch`);
    if (file.readUInt32LE(trailer + 4) !== inflated.length % 2 ** 32) {
      throw new GzipError(`gzip member at byte ${pos}: length mismatch`);
    }
    const end = trailer + 8;
    members.push({ start: pos, end, compressed: file.subarray(pos, end), inflated });
    pos = end;
  }
  return members;
}

/** One gzip member, as `gzip -n -9` makes it for abuild (no name, no timestamp). */
export function gzipMember(data: Buffer): Buffer {
  return gzipSync(data, { level: 9 });
}

export class GzipError extends Error {}

function gzipHeaderLength(file: Buffer, pos: number): number {
  if (file.length - pos < 18) throw new GzipError(`${file.length - pos} stray bytes at byte ${pos}, not a gzip member`);
  if (file[pos] !== 0x1f || file[pos + 1] !== 0x8b) throw new GzipError(`no gzip magic at byte ${pos}`);
  if (file[pos + 2] !== 8) throw new GzipError(`gzip member at byte ${pos} is not deflate`);
  const flags = file[pos + 3]!;
  if (flags & ~(FTEXT | FHCRC | FEXTRA | FNAME | FCOMMENT)) throw new GzipError(`gzip member at byte ${pos} has reserved flags`);
  let p = pos + 10;
  if (flags & FEXTRA) p += 2 + file.readUInt16LE(p);
  if (flags & FNAME) p = zeroTerminated(file, p) + 1;
  if (flags & FCOMMENT) p = zeroTerminated(file, p) + 1;
  if (flags & FHCRC) p += 2;
  if (p > file.length) throw new GzipError(`gzip header at byte ${pos} is truncated`);
  return p - pos;
}

function zeroTerminated(file: Buffer, from: number): number {
  const at = file.indexOf(0, from);
  if (at < 0) throw new GzipError(`unterminated gzip header string at byte ${from}`);
  return at;
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 as gzip's trailer holds it: zlib's own where Node has it (20.15+), else a table. */
export function crc32(data: Buffer): number {
  const native = (zlib as { crc32?: (d: Buffer) => number }).crc32;
  if (native) return native(data) >>> 0;
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
