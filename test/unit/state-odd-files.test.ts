/**
 * What the runtime makes of something other than a state image under a
 * state's name: a directory, a symbolic link (dangling, or to an intact
 * state elsewhere), a FIFO. Each is listed as a state that fails its check,
 * in the words the initramfs uses (state.sh state_check), so that status
 * shows it and neither a boot nor a save uses it; nothing is followed.
 */
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { lstatSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkIntegrity, readSeal } from '../../src/state/seal.js';
import { listStates, nextDefaultBoot } from '../../src/state/states.js';
import { sealBlock } from '../system/initramfs/seal.js';

let dir: string;
let data: string;
/** An intact state outside the data directory, the target of a symbolic link. */
let elsewhere: string;

/** Random bytes followed by their seal: intact as far as the seal and checksum tell. */
async function sealedFile(path: string, id: string): Promise<void> {
  const image = randomBytes(10_000);
  const sha256 = createHash('sha256').update(image).digest('hex');
  const seal = sealBlock({ size: image.length, sha256, id, parent: '', session: '', created: 1_700_000_000, files: 1 });
  await writeFile(path, Buffer.concat([image, seal]));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cairn-odd-states-'));
  data = join(dir, 'data');
  await mkdir(data);
  elsewhere = join(dir, 'elsewhere.squashfs');
  await sealedFile(elsewhere, 'id-elsewhere');
  await mkdir(join(data, 'upperfs.squashfs'));
  await sealedFile(join(data, 'upperfs-backup.squashfs'), 'id-backup');
  await symlink(join(dir, 'nowhere'), join(data, 'upperfs-gen-1.squashfs'));
  await symlink(elsewhere, join(data, 'upperfs-gen-2.squashfs'));
  execFileSync('mkfifo', [join(data, 'upperfs-gen-3.squashfs')]);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const expected = [
  ['upperfs.squashfs', 'newest', false, 'a directory, not a state image'],
  ['upperfs-backup.squashfs', 'backup', true, undefined],
  ['upperfs-gen-3.squashfs', 'generation', false, 'a special file, not a state image'],
  ['upperfs-gen-2.squashfs', 'generation', false, 'a symbolic link, not a state image'],
  ['upperfs-gen-1.squashfs', 'generation', false, 'a symbolic link, not a state image'],
];

describe('listStates with a directory, symbolic links and a FIFO under state names', () => {
  it.each([
    ['reading the seals only', false],
    ['reading whole images', true],
  ])('lists each, failing its check in the words of the initramfs, %s', async (_, full) => {
    const before = readdirSync(data).map((n) => `${n}:${lstatSync(join(data, n)).ino}`);
    const states = await listStates(data, { full });
    expect(states.map((s) => [s.name, s.role, s.check.ok, s.check.ok ? undefined : s.check.problem])).toEqual(expected);
    // A symbolic link is described by itself, not by what it points to.
    const link = states.find((s) => s.name === 'upperfs-gen-2.squashfs')!;
    expect(link.ino).toBe(lstatSync(join(data, link.name)).ino);
    expect(link.check.seal).toBeUndefined();
    // The next default boot skips the directory for the intact backup.
    expect(nextDefaultBoot(states)?.name).toBe('upperfs-backup.squashfs');
    expect(readdirSync(data).map((n) => `${n}:${lstatSync(join(data, n)).ino}`)).toEqual(before);
  });

  it('readSeal and checkIntegrity refuse a symbolic link to an intact state, which they accept by its own name', async () => {
    const link = join(data, 'upperfs-gen-2.squashfs');
    for (const r of [await readSeal(link), await checkIntegrity(link)]) {
      expect(r).toMatchObject({ ok: false, problem: 'a symbolic link, not a state image' });
    }
    expect((await checkIntegrity(elsewhere)).ok).toBe(true);
    expect(readFileSync(elsewhere).length).toBe(10_000 + 4096);
  });
});
