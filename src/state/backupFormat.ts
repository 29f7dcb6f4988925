import { BACKUP } from '../names.js';

/**
 * The layout of a backup file (docs/backup.md): a header block, the members
 * one after another, the manifest, and an end block that says where the
 * manifest is and what its checksum is. Every part starts on a block
 * boundary, so the whole file is read back through a loop device (whose size
 * is counted in sectors) and a truncated file is told by its missing end.
 *
 * Pure parsing and encoding: nothing here touches a file.
 */

export const BLOCK = 4096;

/** A file inside a backup. */
export interface Member {
  name: string;
  offset: number;
  size: number;
  sha256: string;
}

/** Where a kernel's file came from and goes back to. */
export interface KernelFileRef {
  member: string;
  /** `esp`: a path on the ESP; `data`: a name on the data partition. */
  place: 'esp' | 'data';
  path: string;
}

export interface BackupManifest {
  format: number;
  /** ISO time the backup was written. */
  created: string;
  /**
   * The newest state with its chain, base first: today always one full
   * state; checkpoint deltas would follow it in order. Empty when the stick
   * had no state (a stick as built).
   */
  states: { member: string; id: string; name: string }[];
  /** The user's folder as a squashfs image, or null when the stick had none. */
  user: { member: string } | null;
  /** What the ESP boots and the files of its kernels, or null when no ESP was read. */
  kernels: { bootState: string; release: string; files: KernelFileRef[] } | null;
  members: Member[];
}

/** The first block: a magic line and the format, newline-padded like a seal. */
export function encodeHeader(): Buffer {
  return padBlock(`${BACKUP.magic}\nformat=${BACKUP.format}\n`);
}

export interface Footer {
  manifestOffset: number;
  manifestSize: number;
  manifestSha256: string;
}

export function encodeFooter(f: Footer): Buffer {
  return padBlock(
    `${BACKUP.endMagic}\nformat=${BACKUP.format}\nmanifest_offset=${f.manifestOffset}\nmanifest_size=${f.manifestSize}\nmanifest_sha256=${f.manifestSha256}\nend\n`,
  );
}

/** What is wrong with a backup file, in words for the user. */
export type Problem = { problem: string; kind: 'not-a-backup' | 'newer' | 'damaged' };

/** The header's format number, or why the block is not a backup's header. */
export function parseHeader(block: Buffer): { format: number } | Problem {
  const lines = block.toString('latin1').split('\n');
  if (lines[0] !== BACKUP.magic) return { kind: 'not-a-backup', problem: 'not a cairn backup (it does not start with one)' };
  return checkFormat(lines[1]);
}

/** Parses the end block; a file cut short has none. */
export function parseFooter(block: Buffer, fileSize: number): Footer | Problem {
  const lines = block.toString('latin1').split('\n');
  if (lines[0] !== BACKUP.endMagic) {
    return { kind: 'damaged', problem: 'it has no end block: the file is truncated or damaged' };
  }
  const format = checkFormat(lines[1]);
  if ('problem' in format) return format;
  const end = lines.indexOf('end');
  if (end < 0 || lines.slice(end + 1).some((l) => l !== '')) return { kind: 'damaged', problem: 'its end block is damaged' };
  const map = new Map<string, string>();
  for (const line of lines.slice(2, end)) {
    const m = /^([a-z_0-9]+)=(.*)$/.exec(line);
    if (!m || map.has(m[1]!)) return { kind: 'damaged', problem: 'its end block is damaged' };
    map.set(m[1]!, m[2]!);
  }
  const manifestOffset = count(map.get('manifest_offset'));
  const manifestSize = count(map.get('manifest_size'));
  const manifestSha256 = map.get('manifest_sha256') ?? '';
  if (manifestOffset === undefined || manifestSize === undefined || !/^[0-9a-f]{64}$/.test(manifestSha256)) {
    return { kind: 'damaged', problem: 'its end block is damaged' };
  }
  if (manifestOffset < BLOCK || manifestOffset % BLOCK !== 0 || manifestOffset + padded(manifestSize) + BLOCK !== fileSize) {
    return { kind: 'damaged', problem: `it is ${fileSize} bytes, which its end block does not account for: truncated or damaged` };
  }
  return { manifestOffset, manifestSize, manifestSha256 };
}

/**
 * Parses the manifest, as strict as the writer: every member in order,
 * block-aligned, inside the file and before the manifest, and every
 * reference naming a member.
 */
export function parseManifest(text: string, manifestOffset: number): BackupManifest | Problem {
  const bad = (why: string): Problem => ({ kind: 'damaged', problem: `its manifest ${why}` });
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return bad('is not JSON');
  }
  const m = v as Partial<BackupManifest>;
  if (typeof m !== 'object' || m === null) return bad('is not an object');
  const format = checkFormat(`format=${String(m.format)}`);
  if ('problem' in format) return format;
  if (typeof m.created !== 'string' || !Array.isArray(m.members) || !Array.isArray(m.states)) return bad('lacks its fields');
  const names = new Set<string>();
  let next = BLOCK;
  for (const member of m.members as unknown[]) {
    const x = member as Partial<Member>;
    if (typeof x?.name !== 'string' || !/^[a-z0-9][a-z0-9.-]*$/.test(x.name) || names.has(x.name)) return bad('names a member wrongly');
    if (count(String(x.offset)) === undefined || count(String(x.size)) === undefined || typeof x.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(x.sha256)) {
      return bad(`describes ${x.name} wrongly`);
    }
    if (x.offset !== next) return bad(`places ${x.name} where no member starts`);
    next = x.offset + padded(x.size!);
    names.add(x.name);
  }
  if (next !== manifestOffset) return bad('does not account for every byte before it');
  const known = (name: unknown) => typeof name === 'string' && names.has(name);
  for (const s of m.states as unknown[]) {
    const x = s as BackupManifest['states'][number];
    if (!known(x?.member) || typeof x.id !== 'string' || typeof x.name !== 'string') return bad('names a state wrongly');
  }
  if (m.user !== null && !(typeof m.user === 'object' && known(m.user?.member))) return bad('names the user folder wrongly');
  if (m.kernels !== null) {
    const k = m.kernels as BackupManifest['kernels'];
    if (typeof k !== 'object' || !known(k?.bootState) || typeof k?.release !== 'string' || !Array.isArray(k.files)) return bad('names the kernels wrongly');
    for (const f of k.files) {
      if (!known(f?.member) || (f.place !== 'esp' && f.place !== 'data') || typeof f.path !== 'string' || !SAFE_NAME.test(f.path)) {
        return bad('names a kernel file wrongly');
      }
    }
  }
  return m as BackupManifest;
}

/** A kernel file's name: a plain name on the data partition, a path of plain names on the ESP. */
const SAFE_NAME = /^(?:[A-Za-z0-9_+-][A-Za-z0-9._+-]*\/)*[A-Za-z0-9_+-][A-Za-z0-9._+-]*$/;

export function padded(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK;
}

function padBlock(text: string): Buffer {
  const bytes = Buffer.from(text, 'latin1');
  if (bytes.length > BLOCK) throw new Error('a backup block overflows');
  return Buffer.concat([bytes, Buffer.alloc(BLOCK - bytes.length, '\n')]);
}

function checkFormat(line: string | undefined): { format: number } | Problem {
  const m = /^format=([1-9][0-9]*)$/.exec(line ?? '');
  if (!m) return { kind: 'damaged', problem: 'it names no format' };
  const format = Number(m[1]);
  if (format > BACKUP.format) {
    return { kind: 'newer', problem: `it was written by a newer cairn (backup format ${format}; this cairn reads format ${BACKUP.format})` };
  }
  return { format };
}

function count(s: string | undefined): number | undefined {
  if (!s || !/^(0|[1-9][0-9]*)$/.test(s)) return undefined;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : undefined;
}
