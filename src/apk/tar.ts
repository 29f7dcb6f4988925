import { createHash } from 'node:crypto';

/**
 * The tar dialect inside an apk v2 package: POSIX ustar headers, with a
 * per-file PAX extended header ('x') carrying `APK-TOOLS.checksum.SHA1` (and
 * `path`/`linkpath` for long names, `SCHILY.xattr.*` for xattrs).
 *
 * Written here rather than with a tar library. tar-stream 3, the
 * well-kept one for Node, was checked against what apk needs and fails it:
 * it writes and reads PAX values as UTF-8 text, which corrupts binary
 * `SCHILY.xattr.*` values (a file capability with a byte over 0x7f); it
 * writes mode 0 as 0644, clamps uid/gid above 262143 and mtime past 2038;
 * its reader does not stop at the end-of-archive blocks, where apk stops and
 * where the control and signature segments must not have any; and it names
 * every PAX header `PaxHeader` with an added `path` record. node-tar (npm's
 * `tar`) cannot carry the records at all: its PAX header holds a fixed set of
 * fields (path, linkpath, size, times, ids and names, dev, ino, nlink,
 * charset, comment), so neither `APK-TOOLS.checksum.SHA1` nor
 * `SCHILY.xattr.*` can be written. The dialect needed is small, and every
 * byte of it is tested against GNU tar.
 *
 * Reading follows apk-tools 2.14 src/io_archive.c (apk_tar_parse,
 * handle_extended_header); writing follows what abuild produces: GNU tar
 * `--format=posix` (abuild functions.sh apk_tar) piped through
 * `abuild-tar --hash` (abuild-tar.c do_it: SHA1 of a regular file's content or
 * of a symlink's target, appended as the last PAX record) and `--cut` (no
 * end-of-archive blocks). Two things abuild's output has are left out, as
 * apk-tools' readers ignore them: the legacy `APK2` checksum abuild-tar
 * writes into a regular file's link-name field, and the atime/ctime PAX
 * records GNU tar adds.
 */

export const BLOCK = 512;

export type TarEntryType = 'file' | 'directory' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

export interface PaxRecord {
  key: string;
  /** Bytes, not text: `SCHILY.xattr.*` values are binary. */
  value: Buffer;
}

export interface TarEntry {
  /** Path inside the package, relative, without a trailing slash. */
  name: string;
  type: TarEntryType;
  /** Permission bits only (07777). */
  mode: number;
  uid: number;
  gid: number;
  /** Owner names; apk prefers them over the numbers when the target's passwd knows them. */
  uname?: string;
  gname?: string;
  /** Seconds since the epoch. */
  mtime: number;
  /** A regular file's content. */
  content?: Buffer;
  /** A symlink's or hard link's target. */
  linkTarget?: string;
  devmajor?: number;
  devminor?: number;
  /**
   * PAX records. On reading: all of them, in order. On writing: records to
   * carry over (xattrs...); `path`, `linkpath` and `APK-TOOLS.checksum.*` are
   * dropped and made anew.
   */
  pax?: PaxRecord[];
}

export interface ReadTarEntry extends TarEntry {
  /** Offset of the entry's first header block (its PAX header when it has one). */
  offset: number;
  /** Offset just past the entry's content and padding. */
  end: number;
}

export interface ReadTar {
  entries: ReadTarEntry[];
  /** Zero blocks at the end: 0 for a cut archive, at least 2 for a whole one. */
  zeroBlocks: number;
}

export class TarError extends Error {}

const TYPE_FLAGS: Record<TarEntryType, string> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  char: '3',
  block: '4',
  directory: '5',
  fifo: '6',
};

const CHECKSUM_PREFIX = 'APK-TOOLS.checksum.';
export const SHA1_RECORD = `${CHECKSUM_PREFIX}SHA1`;

export interface EncodeTarOptions {
  /** Leave out the end-of-archive blocks, as `abuild-tar --cut` does for the signature and control members. */
  cut: boolean;
  /** Add `APK-TOOLS.checksum.SHA1` to regular files and symlinks, as `abuild-tar --hash` does for the data member. */
  checksums: boolean;
}

/** Writes entries, in the order given, as one tar archive. */
export function encodeTar(entries: readonly TarEntry[], options: EncodeTarOptions): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) parts.push(...encodeEntry(entry, options.checksums));
  if (!options.cut) parts.push(Buffer.alloc(2 * BLOCK));
  return Buffer.concat(parts);
}

/** The SHA1 abuild-tar puts in an entry's PAX header: of a file's bytes, or of a symlink's target. */
export function apkChecksumOf(entry: TarEntry): Buffer | undefined {
  if (entry.type === 'file') return createHash('sha1').update(entry.content ?? Buffer.alloc(0)).digest();
  if (entry.type === 'symlink') return createHash('sha1').update(entry.linkTarget ?? '', 'utf8').digest();
  return undefined;
}

/** The value of one of an entry's PAX records as text (e.g. SHA1_RECORD: the hex sha1). */
export function paxValue(entry: TarEntry, key: string): string | undefined {
  return entry.pax?.find((r) => r.key === key)?.value.toString('utf8');
}

function encodeEntry(entry: TarEntry, checksums: boolean): Buffer[] {
  if (!entry.name || entry.name.startsWith('/') || entry.name.endsWith('/')) {
    throw new TarError(`bad entry name "${entry.name}"`);
  }
  const name = entry.type === 'directory' ? `${entry.name}/` : entry.name;
  const content = entry.type === 'file' ? (entry.content ?? Buffer.alloc(0)) : Buffer.alloc(0);
  const link = entry.type === 'symlink' || entry.type === 'hardlink' ? entry.linkTarget : undefined;
  if ((entry.type === 'symlink' || entry.type === 'hardlink') && !link) {
    throw new TarError(`${entry.name}: a ${entry.type} needs a target`);
  }

  const records: PaxRecord[] = [];
  if (Buffer.byteLength(name) > 100) records.push({ key: 'path', value: Buffer.from(name) });
  if (link && Buffer.byteLength(link) > 100) records.push({ key: 'linkpath', value: Buffer.from(link) });
  for (const r of entry.pax ?? []) {
    if (r.key === 'path' || r.key === 'linkpath' || r.key.startsWith(CHECKSUM_PREFIX)) continue;
    records.push(r);
  }
  const sum = checksums ? apkChecksumOf(entry) : undefined;
  if (sum) records.push({ key: SHA1_RECORD, value: Buffer.from(sum.toString('hex')) });

  const out: Buffer[] = [];
  if (records.length > 0) {
    const body = Buffer.concat(records.map(paxRecord));
    out.push(
      header({
        name: paxHeaderName(name),
        mode: 0o644,
        uid: entry.uid,
        gid: entry.gid,
        size: body.length,
        mtime: entry.mtime,
        typeflag: 'x',
        linkname: '',
        uname: '',
        gname: '',
        devmajor: undefined,
        devminor: undefined,
      }),
      body,
      padding(body.length),
    );
  }
  out.push(
    header({
      name,
      mode: entry.mode & 0o7777,
      uid: entry.uid,
      gid: entry.gid,
      size: content.length,
      mtime: entry.mtime,
      typeflag: TYPE_FLAGS[entry.type],
      linkname: link ?? '',
      uname: entry.uname ?? (entry.uid === 0 ? 'root' : ''),
      gname: entry.gname ?? (entry.gid === 0 ? 'root' : ''),
      devmajor: entry.devmajor ?? 0,
      devminor: entry.devminor ?? 0,
    }),
  );
  if (content.length > 0) out.push(content, padding(content.length));
  return out;
}

/** GNU tar's `exthdr.name=%d/PaxHeaders/%f`, as abuild's apk_tar asks for. */
function paxHeaderName(name: string): string {
  const trimmed = name.replace(/\/$/, '');
  const slash = trimmed.lastIndexOf('/');
  const dir = slash < 0 ? '.' : trimmed.slice(0, slash);
  const base = trimmed.slice(slash + 1);
  return truncateBytes(`${dir}/PaxHeaders/${base}`, 100);
}

/** One PAX record, `"%u %s=%s\n"` where the length counts its own digits (abuild-tar buf_add_ext_header_hexdump). */
function paxRecord(r: PaxRecord): Buffer {
  const rest = Buffer.byteLength(r.key) + r.value.length + 3; // ' ', '=', '\n'
  let len = rest + 1;
  while (len !== rest + String(len).length) len = rest + String(len).length;
  return Buffer.concat([Buffer.from(`${len} ${r.key}=`), r.value, Buffer.from('\n')]);
}

interface HeaderFields {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: string;
  uname: string;
  gname: string;
  devmajor: number | undefined;
  devminor: number | undefined;
}

/** One ustar header block, fields laid out as GNU tar writes them in POSIX mode. */
function header(f: HeaderFields): Buffer {
  const b = Buffer.alloc(BLOCK);
  putString(b, 0, 100, truncateBytes(f.name, 100));
  putOctal(b, 100, 8, f.mode, 'mode');
  putOctal(b, 108, 8, f.uid, 'uid');
  putOctal(b, 116, 8, f.gid, 'gid');
  putOctal(b, 124, 12, f.size, 'size');
  putOctal(b, 136, 12, f.mtime, 'mtime');
  b.write(f.typeflag, 156, 'latin1');
  putString(b, 157, 100, truncateBytes(f.linkname, 100));
  b.write('ustar\u000000', 257, 'latin1');
  putString(b, 265, 32, f.uname);
  putString(b, 297, 32, f.gname);
  if (f.devmajor !== undefined) putOctal(b, 329, 8, f.devmajor, 'devmajor');
  if (f.devminor !== undefined) putOctal(b, 337, 8, f.devminor, 'devminor');
  // Checksum: the sum of all bytes with the field read as spaces, "%06o\0 ".
  b.fill(0x20, 148, 156);
  b.write(`${headerSum(b).toString(8).padStart(6, '0')}\u0000 `, 148, 'latin1');
  return b;
}

function headerSum(block: Buffer): number {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  return sum;
}

function putString(b: Buffer, at: number, size: number, value: string): void {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length > size) throw new TarError(`"${value}" does not fit in ${size} bytes`);
  bytes.copy(b, at);
}

function putOctal(b: Buffer, at: number, size: number, value: number, what: string): void {
  const digits = size - 1;
  if (!Number.isInteger(value) || value < 0 || value >= 8 ** digits) {
    throw new TarError(`${what} ${value} does not fit a ustar header`);
  }
  b.write(`${value.toString(8).padStart(digits, '0')}\u0000`, at, 'latin1');
}

function truncateBytes(value: string, size: number): string {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length <= size) return value;
  // Cut on a character boundary.
  let end = size;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end).toString('utf8');
}

function padding(length: number): Buffer {
  return Buffer.alloc((BLOCK - (length % BLOCK)) % BLOCK);
}

// ---------------------------------------------------------------- reading

/**
 * Reads a tar archive, strictly: every header's checksum must hold, the magic
 * must be ustar (apk refuses anything else), and after the first zero block
 * only zero blocks may follow.
 */
export function decodeTar(buf: Buffer): ReadTar {
  if (buf.length % BLOCK !== 0) throw new TarError(`${buf.length} bytes is not a whole number of 512-byte blocks`);
  const entries: ReadTarEntry[] = [];
  let pos = 0;
  let pax: PaxRecord[] | undefined;
  let longName: string | undefined;
  let entryStart = 0;
  while (pos < buf.length) {
    const block = buf.subarray(pos, pos + BLOCK);
    if (isZero(block)) break;
    if (pax === undefined && longName === undefined) entryStart = pos;
    const h = parseHeader(block, pos);
    const dataStart = pos + BLOCK;
    const dataEnd = dataStart + h.size;
    if (dataEnd > buf.length) throw new TarError(`entry "${h.name}" at byte ${pos} runs past the end`);
    const data = buf.subarray(dataStart, dataEnd);
    pos = dataStart + h.size + padding(h.size).length;

    if (h.typeflag === 'x') {
      pax = [...(pax ?? []), ...parsePax(data, dataStart)];
      continue;
    }
    if (h.typeflag === 'g' || h.typeflag === 'K') continue; // apk ignores both
    if (h.typeflag === 'L') {
      longName = data.toString('utf8').replace(/\0+$/, '');
      continue;
    }
    const type = TYPE_BY_FLAG[h.typeflag];
    if (!type) throw new TarError(`entry "${h.name}" at byte ${entryStart} has type '${h.typeflag}', which apk skips`);
    const paxPath = pax?.find((r) => r.key === 'path')?.value.toString('utf8');
    const paxLink = pax?.find((r) => r.key === 'linkpath')?.value.toString('utf8');
    const name = (paxPath ?? longName ?? h.name).replace(/\/+$/, '');
    const entry: ReadTarEntry = {
      name,
      type,
      mode: h.mode & 0o7777,
      uid: h.uid,
      gid: h.gid,
      uname: h.uname,
      gname: h.gname,
      mtime: h.mtime,
      offset: entryStart,
      end: pos,
    };
    if (type === 'file') entry.content = data;
    if (type === 'symlink' || type === 'hardlink') entry.linkTarget = paxLink ?? h.linkname;
    if (type === 'char' || type === 'block') {
      entry.devmajor = h.devmajor;
      entry.devminor = h.devminor;
    }
    if (pax) entry.pax = pax;
    entries.push(entry);
    pax = undefined;
    longName = undefined;
  }
  if (pax !== undefined || longName !== undefined) throw new TarError('an extended header is not followed by its entry');
  const zeroStart = pos;
  for (; pos < buf.length; pos += BLOCK) {
    if (!isZero(buf.subarray(pos, pos + BLOCK))) throw new TarError(`data after the end-of-archive blocks at byte ${pos}`);
  }
  return { entries, zeroBlocks: (buf.length - zeroStart) / BLOCK };
}

const TYPE_BY_FLAG: Record<string, TarEntryType | undefined> = {
  '0': 'file',
  '7': 'file',
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'directory',
  '6': 'fifo',
};

/** A header as read: the same fields as written, device numbers always present. */
type RawHeader = Omit<HeaderFields, 'devmajor' | 'devminor'> & { devmajor: number; devminor: number };

function parseHeader(b: Buffer, at: number): RawHeader {
  if (b.toString('latin1', 257, 262) !== 'ustar') throw new TarError(`header at byte ${at} is not ustar`);
  const stored = octal(b, 148, 8, at, 'checksum');
  if (stored !== headerSum(b)) throw new TarError(`header at byte ${at} fails its checksum`);
  const name = cString(b, 0, 100);
  const prefix = cString(b, 345, 155);
  const typeflag = String.fromCharCode(b[156]!);
  return {
    name: prefix && typeflag !== 'x' && typeflag !== 'g' ? `${prefix}/${name}` : name,
    mode: octal(b, 100, 8, at, 'mode'),
    uid: octal(b, 108, 8, at, 'uid'),
    gid: octal(b, 116, 8, at, 'gid'),
    size: octal(b, 124, 12, at, 'size'),
    mtime: octal(b, 136, 12, at, 'mtime'),
    typeflag,
    linkname: cString(b, 157, 100),
    uname: cString(b, 265, 32),
    gname: cString(b, 297, 32),
    devmajor: octal(b, 329, 8, at, 'devmajor'),
    devminor: octal(b, 337, 8, at, 'devminor'),
  };
}

/** Octal digits, then only NULs or spaces, as apk-tools' get_octal accepts. */
function octal(b: Buffer, at: number, size: number, header: number, what: string): number {
  const text = b.toString('latin1', at, at + size);
  const m = /^ *([0-7]*)[\0 ]*$/.exec(text);
  if (!m) throw new TarError(`header at byte ${header}: ${what} field "${text.replace(/\0/g, '\\0')}" is not octal`);
  return m[1] ? parseInt(m[1], 8) : 0;
}

function cString(b: Buffer, at: number, size: number): string {
  const field = b.subarray(at, at + size);
  const nul = field.indexOf(0);
  return field.subarray(0, nul < 0 ? size : nul).toString('utf8');
}

function parsePax(data: Buffer, at: number): PaxRecord[] {
  const records: PaxRecord[] = [];
  let p = 0;
  while (p < data.length) {
    const space = data.indexOf(0x20, p);
    const len = space < 0 ? NaN : Number(data.toString('latin1', p, space));
    if (!Number.isInteger(len) || len <= 0 || p + len > data.length || data[p + len - 1] !== 0x0a) {
      throw new TarError(`bad PAX record at byte ${at + p}`);
    }
    const record = data.subarray(space + 1, p + len - 1);
    const eq = record.indexOf(0x3d);
    if (eq <= 0) throw new TarError(`bad PAX record at byte ${at + p}`);
    records.push({ key: record.subarray(0, eq).toString('utf8'), value: Buffer.from(record.subarray(eq + 1)) });
    p += len;
  }
  return records;
}

function isZero(block: Buffer): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return true;
}
