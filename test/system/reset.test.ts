/**
 * `cairn reset`: back to the stick as built, on a real ext4 data partition
 * with sealed states. Every state goes (the newest last, so a power cut
 * midway leaves the newest of what was there, whole), `user/` stays unless
 * --all, nothing happens without a typed confirmation or --yes, and the
 * session that reset is not written back by its own saves.
 */
import { execa } from 'execa';
import { randomUUID } from 'node:crypto';
import { appendFile, chown, mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../src/config.js';
import { DATA } from '../../src/names.js';
import { mksquashfsArgs } from '../../src/save/squash.js';
import { resetStick } from '../../src/state/reset.js';
import { encodeSeal, sha256Of } from '../../src/state/seal.js';
import { listStates, nextDefaultBoot } from '../../src/state/states.js';
import { cairn, requireSystem, Scratch } from '../helpers/system.js';

const s = new Scratch();
let tree: string;
let n = 0;

/** A sealed state holding one file naming it, at NAME in DATA. */
async function state(data: string, name: string): Promise<void> {
  await writeFile(join(tree, 'which'), `${name}\n`);
  const image = join(data, name);
  await execa('mksquashfs', [tree, image, ...mksquashfsArgs(DEFAULTS)]);
  const size = (await stat(image)).size;
  await appendFile(
    image,
    encodeSeal({ size, sha256: await sha256Of(image, size), id: randomUUID(), parent: '', session: '', created: 1, files: 2, space: 4096 }),
  );
}

const ALL = ['upperfs-gen-1.squashfs', 'upperfs-gen-2.squashfs', DATA.backup, DATA.newest];

/** A data partition as a stick keeps it after some saves: two older generations, the backup, the newest, a user folder. */
async function stick(): Promise<string> {
  const data = await s.dataPartition(`data-${n++}`, 32);
  for (const name of ALL) await state(data, name);
  await writeFile(join(data, DATA.held), 'id-x\tfell back\n');
  await writeFile(join(data, DATA.saveFailed), 'The save at the shutdown of ... failed\n');
  await mkdir(join(data, DATA.userDir));
  await chown(join(data, DATA.userDir), 1000, 1000);
  await writeFile(join(data, DATA.userDir, 'kept.txt'), 'mine\n');
  return data;
}

const names = async (data: string) => (await readdir(data)).filter((f) => f !== 'lost+found').sort();

beforeAll(async () => {
  requireSystem(['mksquashfs', 'mkfs.ext4']);
  tree = s.path('tree');
  await mkdir(tree);
});
afterAll(() => s.cleanup());

describe('cairn reset', () => {
  it('removes every saved state and what saves keep beside them, keeps user/, and says so', async () => {
    const data = await stick();
    const r = await cairn(['reset', '--yes', '--data', data]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await names(data)).toEqual([DATA.userDir]);
    expect(r.stdout).toContain(`removed upperfs-gen-1.squashfs, upperfs-gen-2.squashfs, ${DATA.backup}, ${DATA.newest}, ${DATA.held}, ${DATA.saveFailed}`);
    expect(r.stdout).toContain(`kept ${data}/user`);
    expect(await readdir(join(data, DATA.userDir))).toEqual(['kept.txt']);
  });

  it('removes nothing without a terminal to confirm on, unless --yes', async () => {
    const data = await stick();
    const before = await names(data);
    const r = await cairn(['reset', '--data', data]);
    expect(r.exitCode).toBe(3);
    expect(r.stderr).toMatch(/nothing was removed: reset removes 4 saved states only once confirmed/);
    expect(r.stderr).toMatch(/type RESET when asked, or pass --yes/);
    expect(await names(data)).toEqual(before);
  });

  it('--all empties user/ too, keeping the folder with its owner', async () => {
    const data = await stick();
    const r = await cairn(['reset', '--yes', '--all', '--data', data]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await readdir(join(data, DATA.userDir))).toEqual([]);
    expect((await stat(join(data, DATA.userDir))).uid).toBe(1000);
  });

  it('leaves alone what is not a state image at a state name', async () => {
    const data = await stick();
    await execa('rm', [join(data, DATA.backup)]);
    await mkdir(join(data, DATA.backup));
    const r = await cairn(['reset', '--yes', '--data', data]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(`left alone ${DATA.backup}: a directory, not a state image`);
    expect(await names(data)).toEqual([DATA.backup, DATA.userDir]);
  });

  it('cut after any removal, leaves the newest of what was there, each state whole, and the stick boots it', async () => {
    for (let k = 0; k < ALL.length; k++) {
      const data = await stick();
      await resetStick({ dataDir: data, lock: { waitSeconds: 0, session: 'test' }, all: false, runDir: undefined, stopAfterSteps: k });
      const left = await listStates(data, { full: true });
      expect(left.map((x) => x.name).sort()).toEqual(ALL.slice(k).sort());
      expect(left.every((x) => x.check.ok)).toBe(true);
      expect(nextDefaultBoot(left)?.name).toBe(DATA.newest);
    }
  });

  it('the session that reset is not saved unless the user confirms', async () => {
    const data = await stick();
    const run = s.path(`run-${n++}`);
    await mkdir(run);
    const record = join(run, 'boot');
    await writeFile(record, 'requested=default\nused=default\nsession=x\n');
    const upper = s.path(`upper-${n++}`);
    await mkdir(upper);
    await writeFile(join(upper, 'file'), 'this session\n');
    expect((await cairn(['reset', '--yes', '--data', data, '--boot-record', record])).stdout).toContain('this session will not be saved at shutdown');
    const refused = await cairn(['save', '--upper', upper, '--data', data, '--boot-record', record]);
    expect(refused.exitCode).toBe(3);
    expect(refused.stderr).toMatch(/this session reset the stick: nothing is saved unless you confirm/);
    expect(await names(data)).toEqual([DATA.userDir]);
    const saved = await cairn(['save', '--yes', '--upper', upper, '--data', data, '--boot-record', record]);
    expect(saved.exitCode, saved.stderr).toBe(0);
    expect(await names(data)).toEqual([DATA.newest, DATA.userDir]);
  });
});
