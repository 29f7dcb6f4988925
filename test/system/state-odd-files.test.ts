/**
 * Something cairn never makes under one of its names on the data partition:
 * a directory, a dangling symbolic link, a symbolic link to a file elsewhere.
 * `cairn save` refuses to start and names it, `cairn status` lists it as a
 * state that fails its check, `cairn verify` refuses it; none of them prints
 * a stack trace, and nothing is written, renamed or removed, through a link
 * or otherwise.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, catFromImage, requireSystem, Scratch } from '../helpers/system.js';

/** Everything under DIR as lstat sees it: type, inode, size, link target, bytes; directories recursively. */
function fingerprint(dir: string): string[] {
  return readdirSync(dir)
    .filter((n) => n !== 'lost+found')
    .sort()
    .flatMap((n) => {
      const path = join(dir, n);
      const st = lstatSync(path);
      if (st.isSymbolicLink()) return [`${n} -> ${readlinkSync(path)} ino ${st.ino}`];
      if (st.isDirectory()) return [`${n}/ ino ${st.ino}`, ...fingerprint(path).map((e) => `${n}/${e}`)];
      return [`${n} ino ${st.ino} ${createHash('sha256').update(readFileSync(path)).digest('hex')}`];
    });
}

const s = new Scratch();
let data: string;
let upper: string;
/** Copies of the two saved states, and a file outside the data partition a link points to. */
let newestCopy: string;
let backupCopy: string;
let precious: string;

beforeAll(async () => {
  requireSystem();
  data = await s.dataPartition('data', 64);
  upper = s.path('upper');
  await mkdir(upper);
  for (const marker of ['old', 'new']) {
    await writeFile(join(upper, 'marker'), marker);
    const r = await cairn(['save', '--upper', upper, '--data', data]);
    expect(r.exitCode, r.stderr).toBe(0);
  }
  newestCopy = s.path('newest.copy');
  backupCopy = s.path('backup.copy');
  copyFileSync(join(data, 'upperfs.squashfs'), newestCopy);
  copyFileSync(join(data, 'upperfs-backup.squashfs'), backupCopy);
  // An intact state outside the data partition: what a link "to a state" points to.
  precious = s.path('precious.squashfs');
  copyFileSync(newestCopy, precious);
  await writeFile(join(upper, 'marker'), 'unsaved');
});
afterAll(() => s.cleanup());

type Kind = 'a directory' | 'a dangling symbolic link' | 'a symbolic link to a file elsewhere';
const KINDS: Kind[] = ['a directory', 'a dangling symbolic link', 'a symbolic link to a file elsewhere'];
const words = (kind: Kind) => (kind === 'a directory' ? 'a directory' : 'a symbolic link');

async function make(path: string, kind: Kind): Promise<void> {
  if (kind === 'a directory') {
    await mkdir(path);
    await writeFile(join(path, 'something'), 'a user put this here\n');
  } else {
    await symlink(kind === 'a dangling symbolic link' ? s.path('nowhere') : precious, path);
  }
}

/** The data partition with the two saved states, and KIND under NAME (in place of a state so named). */
async function layout(name: string, kind: Kind): Promise<string> {
  for (const n of readdirSync(data).filter((x) => x !== 'lost+found')) await rm(join(data, n), { recursive: true, force: true });
  copyFileSync(newestCopy, join(data, 'upperfs.squashfs'));
  copyFileSync(backupCopy, join(data, 'upperfs-backup.squashfs'));
  const path = join(data, name);
  await rm(path, { force: true });
  await make(path, kind);
  return path;
}

const cases = ['upperfs.squashfs', 'upperfs-backup.squashfs', 'upperfs-gen-1.squashfs', 'upperfs.squashfs.tmp', 'upperfs-backup.squashfs.next']
  .flatMap((name) => KINDS.map((kind) => [name, kind] as const));

describe('cairn save', () => {
  it.each(cases)('refuses to start when %s is %s, names it and changes nothing', async (name, kind) => {
    const path = await layout(name, kind);
    const before = fingerprint(data);
    const preciousBefore = readFileSync(precious);
    const r = await cairn(['save', '--upper', upper, '--data', data]);
    expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
    expect(r.exitCode, r.stderr).toBe(73);
    expect(r.stderr).toContain(`cairn: ${path} is ${words(kind)}, not a state image: the save uses this name for its own files, so it did not start`);
    expect(r.stderr).toContain(`hint: cairn did not make it and leaves it alone: move it away (for example mv ${path} ${path}.moved)`);
    expect(fingerprint(data)).toEqual(before);
    expect(readFileSync(precious)).toEqual(preciousBefore);
    for (const state of ['upperfs.squashfs', 'upperfs-backup.squashfs'].filter((n) => n !== name)) {
      expect(await catFromImage(join(data, state), 'marker')).toBe(state === 'upperfs.squashfs' ? 'new' : 'old');
    }
  });

  it('saves once the entry is moved away, as the hint says', async () => {
    const path = await layout('upperfs.squashfs.tmp', 'a directory');
    const r1 = await cairn(['save', '--upper', upper, '--data', data]);
    expect(r1.exitCode).toBe(73);
    await rm(path, { recursive: true });
    const r2 = await cairn(['save', '--upper', upper, '--data', data]);
    expect(r2.exitCode, r2.stderr).toBe(0);
    expect(await catFromImage(join(data, 'upperfs.squashfs'), 'marker')).toBe('unsaved');
    expect(await catFromImage(join(data, 'upperfs-backup.squashfs'), 'marker')).toBe('new');
  });
});

describe('cairn status and cairn verify', () => {
  const stateCases = cases.filter(([name]) => name.endsWith('.squashfs'));

  it.each(stateCases)('status lists %s as %s that fails its check, with and without --quick', async (name, kind) => {
    await layout(name, kind);
    const before = fingerprint(data);
    const problem = `${words(kind)}, not a state image`;
    for (const quick of [[], ['--quick']]) {
      const r = await cairn(['status', '--data', data, ...quick]);
      expect(r.stderr).toBe('');
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`${name.replace(/\./g, '\\.')}\\s.*DAMAGED: ${problem}`));
      expect(r.stdout).toContain(`next default boot: ${name === 'upperfs.squashfs' ? 'backup' : 'default'}`);
      const json = JSON.parse((await cairn(['status', '--data', data, '--json', ...quick])).stdout);
      expect(json.states.find((x: { name: string }) => x.name === name)).toMatchObject({ intact: false, problem });
    }
    expect(fingerprint(data)).toEqual(before);
  });

  it.each(stateCases)('verify refuses %s when it is %s', async (name, kind) => {
    const path = await layout(name, kind);
    const r = await cairn(['verify', path]);
    expect(r.stderr).not.toMatch(/internal error/);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toBe(`cairn: ${path}: ${words(kind)}, not a state image`);
  });
});
