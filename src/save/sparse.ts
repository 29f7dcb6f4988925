import { closeSync, existsSync, openSync, readSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { CommandFailedError } from '../lib/errors.js';
import { run } from '../lib/run.js';
import { STATE } from '../names.js';
import { openRegular, toFsPath, TreeReach } from './reach.js';
import type { PackedFile, Walk } from './tree.js';
import { dumpXattrs, formatXattrDump, parseXattrDump } from './xattrs.js';

/**
 * Sparse files too large to squash as they are. mksquashfs finds holes by
 * reading them, so `truncate -s 1T` would keep a save busy for an hour
 * (tree.ts HOLE_BUDGET). Such a file is kept without its holes instead:
 *
 * - its data extents are found with SEEK_DATA and SEEK_HOLE, which Node
 *   lacks; perl's sysseek has them, and perl is part of every Debian system
 *   (Alpine's perl package where the alpine base has it, else the file is
 *   left out and named, tree.ts);
 * - the image holds, in STATE.sparseDir at its root, each file's data
 *   extents end to end (`<n>`, made by a perl command mksquashfs runs, so
 *   they are never copied into RAM), a `map` of where they go and of the
 *   file's size, mode, owner and times, and the files' xattrs (`xattrs`, as
 *   `setfattr --restore` reads them, ACLs included);
 * - the boot rebuilds each file with dd, seeking over the holes, and removes
 *   the directory (initramfs/lib/sparse.sh).
 *
 * docs/state-format.md describes the record.
 */

/** Whether this system can keep a sparse file without its holes: it has perl. */
export function canPackSparse(): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => dir && existsSync(join(dir, 'perl')));
}

export interface Extent {
  offset: number;
  length: number;
}

/** The data extents of a file as they were found, with the size they were found at. */
export interface SparseLayout {
  size: number;
  extents: Extent[];
}

/**
 * Prints, for each NUL-ended path on stdin (relative to the working
 * directory), "<size> <offset>:<length>,..." or "-" when it cannot be
 * opened as a regular file (opened without waiting: the user may have
 * swapped it for a FIFO since the walk). SEEK_DATA (3) fails with ENXIO
 * past the last data: the end of the list.
 */
const MAP_SCRIPT = String.raw`
use strict; use Fcntl qw(O_RDONLY O_NOFOLLOW O_NONBLOCK);
local $/ = "\0";
while (my $path = <STDIN>) {
  chomp $path;
  my $fh;
  if (!sysopen($fh, $path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK) || !-f $fh) { print "-\n"; next; }
  my ($size, $pos, @extents) = (-s $fh, 0);
  while ($pos < $size) {
    my $data = sysseek($fh, $pos, 3); last unless defined $data;
    my $hole = sysseek($fh, $data, 4); last unless defined $hole;
    push @extents, ($data + 0) . ':' . ($hole - $data);
    $pos = $hole;
  }
  print "$size ", (@extents ? join(',', @extents) : '-'), "\n";
  close $fh;
}`;

/**
 * Writes to stdout the data extents of the file a spec names: its first
 * line "<offset>:<length>,...", the rest the file's path. A file that
 * shrank, went or was swapped for something else meanwhile still gives the
 * promised length, zeros where it ended: the verification finds the
 * difference and says the file changed.
 */
const PACK_SCRIPT = String.raw`
use strict; use Fcntl qw(O_RDONLY O_NOFOLLOW O_NONBLOCK);
open(my $spec, '<:raw', $ARGV[0]) or die "$ARGV[0]: $!\n";
my $extents = <$spec>; chomp $extents;
my $path = do { local $/; <$spec> };
my $fh; (sysopen($fh, $path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK) && -f $fh) or undef $fh;
binmode STDOUT;
for my $extent (split /,/, $extents) {
  my ($at, $left) = split /:/, $extent;
  sysseek($fh, $at, 0) if $fh;
  while ($left > 0) {
    my $want = $left < 1048576 ? $left : 1048576;
    my $buf = '';
    my $got = $fh ? sysread($fh, $buf, $want) : 0;
    if (!$got) { $buf = "\0" x $want; $got = $want; undef $fh; }
    my $off = 0;
    while ($off < $got) { my $w = syswrite(STDOUT, $buf, $got - $off, $off); die "write: $!\n" unless $w; $off += $w; }
    $left -= $got;
  }
}`;

/**
 * The data extents of the packed files below `root`, by one perl process;
 * undefined for a file that is gone or no longer a regular file.
 */
export async function mapSparse(root: string, packed: readonly PackedFile[]): Promise<(SparseLayout | undefined)[]> {
  if (!packed.length) return [];
  const input = Buffer.concat(packed.map((p) => Buffer.from(`${p.rels[0]}\0`, 'latin1')));
  const { stdout } = await run('perl', ['-e', MAP_SCRIPT], { timeoutMs: 10 * 60_000, cwd: root, input });
  const lines = stdout.split('\n');
  if (lines.length !== packed.length) {
    throw new CommandFailedError('perl (finding sparse files data)', 0, `answered ${lines.length} lines for ${packed.length} files`);
  }
  return lines.map((line) => {
    const m = /^(\d+) (-|\d+:\d+(?:,\d+:\d+)*)$/.exec(line);
    if (!m) return undefined;
    const extents = m[2] === '-' ? [] : m[2]!.split(',').map((x) => x.split(':').map(Number) as [number, number]);
    return { size: Number(m[1]), extents: extents.map(([offset, length]) => ({ offset, length })) };
  });
}

/**
 * The dd block size the boot copies a file's extents with: the largest power
 * of two up to 1 MiB that divides every offset and every length but the
 * last (the file's end), so every extent starts on a block both in the
 * packed data and in the file.
 */
export function copyBlockSize(extents: readonly Extent[]): number {
  let bs = 1 << 20;
  extents.forEach((x, i) => {
    for (const n of i === extents.length - 1 ? [x.offset] : [x.offset, x.length]) {
      while (bs > 1 && n % bs !== 0) bs /= 2;
    }
  });
  return bs;
}

/** One line of the map per path: the boot reads it with `read`, the path last. */
export interface MapLine {
  /** The packed data's name in STATE.sparseDir; hard links share it. */
  n: number;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch: the file's, and its directory's, which creating the file changes. */
  mtime: number;
  dirMtime: number;
  bs: number;
  extents: Extent[];
  rel: string;
}

export const MAP_HEADER = '# cairn sparse map 1: n size mode uid gid mtime dir-mtime bs extents path';

/**
 * A path as the boot's `printf %b` turns back into bytes: every byte but
 * letters, digits and . _ / - as \0ooo, so the field holds no space and
 * the shell sees nothing it would expand.
 */
const escapePath = (rel: string): string =>
  rel.replace(/[^A-Za-z0-9._/-]/g, (c) => `\\0${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
const unescapePath = (s: string): string => s.replace(/\\0([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

export function formatMap(lines: readonly MapLine[]): Buffer {
  const text = lines.map((l) => {
    const extents = l.extents.length ? l.extents.map((x) => `${x.offset}:${x.length}`).join(',') : '-';
    return `${l.n} ${l.size} ${l.mode.toString(8)} ${l.uid} ${l.gid} ${l.mtime} ${l.dirMtime} ${l.bs} ${extents} ${escapePath(l.rel)}\n`;
  });
  return Buffer.from(`${MAP_HEADER}\n${text.join('')}`, 'latin1');
}

export function parseMap(data: Buffer): MapLine[] {
  const out: MapLine[] = [];
  for (const line of data.toString('latin1').split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const f = line.split(' ');
    if (f.length !== 10) throw new Error(`a line of the sparse map has ${f.length} fields, not 10`);
    const [n, size, mode, uid, gid, mtime, dirMtime, bs, extents, rel] = f as [string, ...string[]];
    out.push({
      n: Number(n),
      size: Number(size),
      mode: parseInt(mode!, 8),
      uid: Number(uid),
      gid: Number(gid),
      mtime: Number(mtime),
      dirMtime: Number(dirMtime),
      bs: Number(bs),
      extents: extents === '-' ? [] : extents!.split(',').map((x) => ({ offset: Number(x.split(':')[0]), length: Number(x.split(':')[1]) })),
      rel: unescapePath(rel!),
    });
  }
  return out;
}

const seconds = (ms: number) => Math.floor(ms / 1000);
const dirOf = (rel: string) => (rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '');

function mapLines(saved: Walk, layouts: readonly (SparseLayout | undefined)[]): MapLine[] {
  return saved.packed.flatMap((p, n) => {
    const layout = layouts[n] ?? { size: p.entry.size, extents: [] };
    return p.rels.map((rel) => ({
      n,
      size: layout.size,
      mode: p.entry.mode,
      uid: p.entry.uid,
      gid: p.entry.gid,
      mtime: seconds(p.entry.mtimeMs),
      dirMtime: seconds(saved.entries.get(dirOf(rel))?.mtimeMs ?? 0),
      bs: copyBlockSize(layout.extents),
      extents: layout.extents,
      rel,
    }));
  });
}

/** Every xattr of the packed files, ACLs included: squashfs holds none of theirs. */
async function packedXattrs(root: string, packed: readonly PackedFile[]) {
  const rels = new Set(packed.flatMap((p) => p.rels));
  const all = await dumpXattrs(root, '.');
  for (const rel of all.keys()) if (!rels.has(rel)) all.delete(rel);
  return all;
}

const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
const pseudoPath = (s: string) => s.replace(/[^A-Za-z0-9/._-]/g, '\\$&');

/**
 * Writes in DIR what the image's sparse record is made from, and returns
 * the mksquashfs pseudo definitions that put it at the image's root; none
 * when the save packs no file.
 */
export async function sparsePseudoFiles(upperDir: string, dir: string, saved: Walk): Promise<string[]> {
  if (!saved.packed.length) return [];
  await mkdir(dir, { mode: 0o700 });
  const [layouts, xattrs] = await Promise.all([mapSparse(upperDir, saved.packed), packedXattrs(upperDir, saved.packed)]);
  const script = join(dir, 'pack.pl');
  await writeFile(script, PACK_SCRIPT, { mode: 0o600 });
  await writeFile(join(dir, 'map'), formatMap(mapLines(saved, layouts)), { mode: 0o600 });
  await writeFile(join(dir, 'xattrs'), formatXattrDump(xattrs), { mode: 0o600 });
  const record = STATE.sparseDir;
  const defs = [`${record} d 700 0 0`, `${record}/map l ${pseudoPath(join(dir, 'map'))}`, `${record}/xattrs l ${pseudoPath(join(dir, 'xattrs'))}`];
  for (const [n, p] of saved.packed.entries()) {
    const extents = (layouts[n]?.extents ?? []).map((x) => `${x.offset}:${x.length}`).join(',');
    const spec = join(dir, `${n}.spec`);
    await writeFile(spec, Buffer.concat([Buffer.from(`${extents}\n`), toFsPath(upperDir, p.rels[0]!)]), { mode: 0o600 });
    // mksquashfs runs the command with /bin/sh -c.
    defs.push(`${record}/${n} f 600 0 0 perl ${shellQuote(script)} ${shellQuote(spec)}`);
  }
  return defs;
}

export interface SparseDifference {
  rel: string;
  what: string;
  expected: string;
  actual: string;
}

const show = (l?: { size: number; mode: number; uid: number; gid: number; extents: Extent[] }) =>
  l ? `${l.size} bytes, mode 0${l.mode.toString(8)}, owner ${l.uid}:${l.gid}, data at ${l.extents.map((x) => `${x.offset}+${x.length}`).join(' ') || 'none'}` : '(none)';

/**
 * Verification of the sparse record in a mounted image against the upper
 * layer: every packed path is in the map, with the file's size, mode, owner
 * and data extents as they are now, hard links sharing their data; the data
 * matches the file's byte for byte; the xattrs match. Reads the data only,
 * never the holes.
 */
export async function compareSparse(
  upperRoot: string,
  imageRoot: string,
  upper: Walk,
  onBytes: (n: number) => void,
): Promise<SparseDifference[]> {
  const record = join(imageRoot, STATE.sparseDir);
  const mapData = await readFile(join(record, 'map')).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  const recorded = mapData ? parseMap(mapData) : [];
  const out: SparseDifference[] = [];
  const byRel = new Map(recorded.map((l) => [l.rel, l]));
  const packedRels = new Set(upper.packed.flatMap((p) => p.rels));
  for (const l of recorded) {
    if (!packedRels.has(l.rel)) out.push({ rel: l.rel, what: 'presence', expected: 'absent', actual: 'present in the image only' });
  }
  if (!upper.packed.length) return out;
  const [layouts, liveXattrs, recordedXattrs] = await Promise.all([
    mapSparse(upperRoot, upper.packed),
    packedXattrs(upperRoot, upper.packed),
    readFile(join(record, 'xattrs')).then(parseXattrDump, () => new Map() as ReturnType<typeof parseXattrDump>),
  ]);
  const reach = new TreeReach(upperRoot);
  try {
    for (const [k, p] of upper.packed.entries()) {
      const layout = layouts[k];
      const first = byRel.get(p.rels[0]!);
      if (!layout) {
        out.push({ rel: p.rels[0]!, what: 'presence', expected: 'removed while the save compared it', actual: 'present' });
        continue;
      }
      const want = { ...layout, mode: p.entry.mode, uid: p.entry.uid, gid: p.entry.gid };
      let same = true;
      for (const rel of p.rels) {
        const got = byRel.get(rel);
        if (!got) out.push({ rel, what: 'presence', expected: 'present', actual: 'missing from the image' });
        else if (show(got) !== show(want)) out.push({ rel, what: 'sparse file', expected: show(want), actual: show(got) });
        else if (got.n !== first?.n) out.push({ rel, what: 'hard links', expected: `linked with /${p.rels[0]}`, actual: 'not linked in the image' });
        else continue;
        same = false;
      }
      if (same && first) {
        const fd = openRegular(reach, p.rels[0]!);
        if (fd === undefined) {
          out.push({ rel: p.rels[0]!, what: 'presence', expected: 'removed or replaced while the save compared it', actual: 'present' });
        } else {
          const at = compareData(fd, join(record, String(first.n)), layout.extents, onBytes);
          if (at !== undefined) out.push({ rel: p.rels[0]!, what: 'contents', expected: 'other bytes', actual: `different from byte ${at} on` });
        }
      }
      for (const rel of p.rels) {
        const raw = (m?: Map<string, string>) => [...(m ?? [])].sort().map(([a, b]) => `${a}=${b}`).join(' ') || '(none)';
        const [a, b] = [raw(liveXattrs.get(rel)), raw(recordedXattrs.get(rel))];
        if (a !== b) out.push({ rel, what: 'xattrs', expected: a, actual: b });
      }
    }
  } finally {
    reach.close();
  }
  return out;
}

/**
 * The first offset in the file open at FA (closed here) at which its data
 * extents differ from the packed data, or undefined when they are equal and
 * nothing is left over.
 */
function compareData(fa: number, packed: string, extents: readonly Extent[], onBytes: (n: number) => void): number | undefined {
  const chunk = 1 << 20;
  const a = Buffer.allocUnsafe(chunk);
  const b = Buffer.allocUnsafe(chunk);
  let fb: number;
  try {
    fb = openSync(packed, 'r');
  } catch (e) {
    closeSync(fa);
    throw e;
  }
  try {
    let at = 0;
    for (const x of extents) {
      for (let done = 0; done < x.length; ) {
        const want = Math.min(chunk, x.length - done);
        const ra = readSync(fa, a, 0, want, x.offset + done);
        const rb = readSync(fb, b, 0, want, at);
        if (ra !== want || rb !== want || a.compare(b, 0, want, 0, want) !== 0) {
          let k = 0;
          while (k < Math.min(ra, rb) && a[k] === b[k]) k++;
          return x.offset + done + k;
        }
        done += want;
        at += want;
        onBytes(want);
      }
    }
    return readSync(fb, b, 0, 1, at) === 0 ? undefined : (extents.at(-1)?.offset ?? 0) + (extents.at(-1)?.length ?? 0);
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}
