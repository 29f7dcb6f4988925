/**
 * The newc ("070701") cpio format the kernel unpacks an initramfs from,
 * written here so that an archive is reproducible: entries sorted by path,
 * every mtime, owner and inode number fixed, whatever the build host has.
 *
 * Each entry is a 110-byte ASCII header (the magic and 13 fields of 8 hex
 * digits), the path and a NUL padded to a multiple of 4 bytes, then the data
 * padded the same way. The archive ends with an entry named TRAILER!!!.
 */

export type CpioEntry =
  | { path: string; type: 'dir'; mode: number }
  | { path: string; type: 'file'; mode: number; data: Buffer }
  | { path: string; type: 'symlink'; target: string }
  | { path: string; type: 'chardev'; mode: number; major: number; minor: number };

const TYPE_BITS = { dir: 0o040000, file: 0o100000, symlink: 0o120000, chardev: 0o020000 } as const;
const TRAILER = 'TRAILER!!!';
const MAX_FIELD = 0xffffffff;

/** Archive paths are relative ("bin/busybox"): no leading slash, no "." or ".." parts. */
export function normalizeArchivePath(path: string): string {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length === 0 || parts.includes('..')) throw new Error(`cpio: bad path "${path}"`);
  return parts.join('/');
}

/** Byte order of paths: parents come before their children. */
function comparePaths(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

function field(value: number): string {
  if (!Number.isInteger(value) || value < 0 || value > MAX_FIELD) throw new Error(`cpio: field value ${value} out of range`);
  return value.toString(16).padStart(8, '0');
}

function pad4(length: number): Buffer {
  return Buffer.alloc((4 - (length % 4)) % 4);
}

interface Header {
  ino: number;
  mode: number;
  nlink: number;
  size: number;
  rdevMajor: number;
  rdevMinor: number;
  name: string;
}

function header(h: Header): Buffer {
  const name = Buffer.from(`${h.name}\0`);
  const fields = [
    h.ino,
    h.mode,
    0, // uid
    0, // gid
    h.nlink,
    0, // mtime: fixed, so that the same inputs give the same bytes
    h.size,
    0, // devmajor
    0, // devminor
    h.rdevMajor,
    h.rdevMinor,
    name.length,
    0, // check: unused in newc
  ];
  const text = Buffer.from(`070701${fields.map(field).join('')}`, 'ascii');
  return Buffer.concat([text, name, pad4(text.length + name.length)]);
}

/**
 * The archive for `entries`, sorted by path. Every directory a path needs
 * must be an entry of its own (the kernel does not make missing parents);
 * a missing one, or a path given twice, is an error.
 */
export function writeNewc(entries: readonly CpioEntry[]): Buffer {
  const sorted = entries
    .map((e) => ({ ...e, path: normalizeArchivePath(e.path) }))
    .sort((a, b) => comparePaths(a.path, b.path));
  const dirs = new Set(sorted.filter((e) => e.type === 'dir').map((e) => e.path));
  const chunks: Buffer[] = [];
  let previous: string | undefined;
  let ino = 1;
  for (const e of sorted) {
    if (e.path === previous) throw new Error(`cpio: "${e.path}" is in the archive twice`);
    previous = e.path;
    const parent = e.path.includes('/') ? e.path.slice(0, e.path.lastIndexOf('/')) : undefined;
    if (parent !== undefined && !dirs.has(parent)) throw new Error(`cpio: "${e.path}" has no parent directory entry "${parent}"`);
    const data =
      e.type === 'file' ? e.data : e.type === 'symlink' ? Buffer.from(e.target) : Buffer.alloc(0);
    const perm = e.type === 'symlink' ? 0o777 : e.mode & 0o7777;
    chunks.push(
      header({
        ino: ino++,
        mode: TYPE_BITS[e.type] | perm,
        nlink: e.type === 'dir' ? 2 : 1,
        size: data.length,
        rdevMajor: e.type === 'chardev' ? e.major : 0,
        rdevMinor: e.type === 'chardev' ? e.minor : 0,
        name: e.path,
      }),
      data,
      pad4(data.length),
    );
  }
  chunks.push(header({ ino: 0, mode: 0, nlink: 1, size: 0, rdevMajor: 0, rdevMinor: 0, name: TRAILER }));
  return Buffer.concat(chunks);
}
