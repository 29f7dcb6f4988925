/**
 * The backup file's layout (src/state/backupFormat.ts): what a reader takes
 * as a whole backup of this format, and what it refuses, with the reason a
 * user is shown.
 */
import { describe, expect, it } from 'vitest';
import { BACKUP } from '../../src/names.js';
import {
  BLOCK,
  encodeFooter,
  encodeHeader,
  padded,
  parseFooter,
  parseHeader,
  parseManifest,
  type BackupManifest,
} from '../../src/state/backupFormat.js';

const SHA = 'a'.repeat(64);

function manifest(over: Partial<BackupManifest> = {}): BackupManifest {
  return {
    format: BACKUP.format,
    created: '2026-12-07T00:00:00.000Z',
    states: [{ member: 'state-0', id: 'id-1', name: 'upperfs.squashfs' }],
    user: { member: 'user' },
    kernels: {
      bootState: 'boot-state',
      release: '6.1.0-1',
      files: [
        { member: 'kernel', place: 'esp', path: 'vmlinuz-6.1.0-1' },
        { member: 'modules', place: 'data', path: 'modules-6.1.0-1.squashfs' },
      ],
    },
    members: [
      { name: 'state-0', offset: BLOCK, size: 5000, sha256: SHA },
      { name: 'user', offset: BLOCK + padded(5000), size: 4096, sha256: SHA },
      { name: 'boot-state', offset: BLOCK + padded(5000) + 4096, size: 10, sha256: SHA },
      { name: 'kernel', offset: BLOCK + padded(5000) + 2 * 4096, size: 1, sha256: SHA },
      { name: 'modules', offset: BLOCK + padded(5000) + 3 * 4096, size: 0, sha256: SHA },
    ],
    ...over,
  };
}
/** Where the manifest starts after the members of manifest(). */
const END = BLOCK + padded(5000) + 3 * 4096;

describe('the backup header', () => {
  it('reads back the format it was written with', () => {
    expect(encodeHeader().length).toBe(BLOCK);
    expect(parseHeader(encodeHeader())).toEqual({ format: BACKUP.format });
  });

  it('refuses a file that is not a backup', () => {
    const r = parseHeader(Buffer.concat([Buffer.from('hsqs'), Buffer.alloc(BLOCK - 4)]));
    expect(r).toMatchObject({ kind: 'not-a-backup', problem: 'not a cairn backup (it does not start with one)' });
  });

  it('refuses a backup of a newer format, saying which', () => {
    const r = parseHeader(Buffer.from(`${BACKUP.magic}\nformat=${BACKUP.format + 1}\n`));
    expect(r).toMatchObject({ kind: 'newer' });
    expect((r as { problem: string }).problem).toBe(
      `it was written by a newer cairn (backup format ${BACKUP.format + 1}; this cairn reads format ${BACKUP.format})`,
    );
  });
});

describe('the end block', () => {
  const footer = { manifestOffset: END, manifestSize: 300, manifestSha256: SHA };
  const size = END + BLOCK + BLOCK;

  it('reads back where the manifest is', () => {
    expect(parseFooter(encodeFooter(footer), size)).toEqual(footer);
  });

  it('tells a file cut short: no end block, or one that does not fit the size', () => {
    expect(parseFooter(Buffer.alloc(BLOCK), size)).toMatchObject({ kind: 'damaged', problem: 'it has no end block: the file is truncated or damaged' });
    expect(parseFooter(encodeFooter(footer), size - BLOCK)).toMatchObject({ kind: 'damaged', problem: expect.stringMatching(/which its end block does not account for/) });
  });

  it('refuses an end block of a newer format', () => {
    const text = encodeFooter(footer).toString('latin1').replace(`format=${BACKUP.format}`, `format=${BACKUP.format + 1}`);
    expect(parseFooter(Buffer.from(text, 'latin1'), size)).toMatchObject({ kind: 'newer' });
  });

  it('refuses a flipped digit in its numbers', () => {
    const text = encodeFooter(footer).toString('latin1').replace('manifest_size=300', 'manifest_size=3x0');
    expect(parseFooter(Buffer.from(text, 'latin1'), size)).toMatchObject({ kind: 'damaged', problem: 'its end block is damaged' });
  });
});

describe('the manifest', () => {
  const parse = (m: unknown, end = END) => parseManifest(JSON.stringify(m), end);

  it('reads a manifest whose members fill the file up to it, in order', () => {
    expect(parse(manifest())).toEqual(manifest());
  });

  it('holds the state chain as a list, base first, ready for deltas after it', () => {
    const m = manifest({
      states: [
        { member: 'state-0', id: 'base', name: 'upperfs.squashfs' },
        { member: 'user', id: 'delta', name: 'x' },
      ],
    });
    expect((parse(m) as BackupManifest).states.map((s) => s.id)).toEqual(['base', 'delta']);
  });

  it('refuses members with a gap, an overlap, or bytes left over before the manifest', () => {
    const gap = manifest();
    gap.members[1]!.offset += BLOCK;
    expect(parse(gap)).toMatchObject({ kind: 'damaged', problem: 'its manifest places user where no member starts' });
    expect(parse(manifest(), END + BLOCK)).toMatchObject({ kind: 'damaged', problem: 'its manifest does not account for every byte before it' });
  });

  it('refuses a reference to a member it does not have', () => {
    expect(parse(manifest({ user: { member: 'nope' } }))).toMatchObject({ problem: 'its manifest names the user folder wrongly' });
    expect(parse(manifest({ states: [{ member: 'nope', id: '', name: '' }] }))).toMatchObject({ problem: 'its manifest names a state wrongly' });
  });

  it('refuses a kernel file whose path leaves its place', () => {
    const m = manifest();
    m.kernels!.files[1]!.path = '../rootfs.squashfs';
    expect(parse(m)).toMatchObject({ problem: 'its manifest names a kernel file wrongly' });
  });

  it('refuses what is not JSON, and a manifest of a newer format', () => {
    expect(parseManifest('{"format": 1,', END)).toMatchObject({ kind: 'damaged', problem: 'its manifest is not JSON' });
    expect(parse(manifest({ format: BACKUP.format + 1 }))).toMatchObject({ kind: 'newer' });
  });

  it('takes a backup without state, user folder or kernels', () => {
    const m = manifest({ states: [], user: null, kernels: null, members: [] });
    expect(parse(m, BLOCK)).toEqual(m);
  });
});
