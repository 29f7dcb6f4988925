import { readFileSync, statSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, catFromImage, listDir, requireSystem, Scratch } from '../helpers/system.js';

const session = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();

/**
 * Which state becomes the backup, and that no save destroys a state the user
 * has not seen replaced (DESIGN.md "Save"). Each state holds a marker file
 * naming it, so the tests read back which state sits under which name.
 */
describe('rotation keeps the state a session booted from as the backup', () => {
  const s = new Scratch();
  let data: string;
  let upper: string;

  const save = async (marker: string, extra: string[] = []) => {
    await writeFile(join(upper, 'marker'), marker);
    const r = await cairn(['save', '--upper', upper, '--data', data, '--json', ...extra]);
    if (r.exitCode !== 0) throw new Error(`save ${marker} failed: ${r.stderr}`);
    return JSON.parse(r.stdout);
  };
  const marker = (name: string) => catFromImage(join(data, name), 'marker');
  const idOf = async (name: string): Promise<string> => {
    const st = JSON.parse((await cairn(['status', '--data', data, '--json', '--quick'])).stdout);
    return st.states.find((x: { name: string }) => x.name === name).id;
  };
  const bootRecord = async (used: string, stateId: string, sess = session, requested = used) => {
    const path = s.path(`boot-${used}-${Date.now()}`);
    await writeFile(path, `requested=${requested}\nused=${used}\nstate_id=${stateId}\nupper=tmpfs\nsession=${sess}\n`);
    return path;
  };
  const states = () => listDir(data).filter((n) => n.endsWith('.squashfs'));

  beforeAll(async () => {
    requireSystem();
    data = await s.dataPartition();
    upper = s.path('upper');
    await mkdir(upper);
  });
  afterAll(() => s.cleanup());

  it('the first boot of a new stick (default asked, nothing to unpack) saves without asking', async () => {
    const fresh = await s.dataPartition('fresh', 64);
    const record = await bootRecord('clean', '', session, 'default');
    await writeFile(join(upper, 'marker'), 'first');
    const r = await cairn(['save', '--upper', upper, '--data', fresh, '--boot-record', record]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await catFromImage(join(fresh, 'upperfs.squashfs'), 'marker')).toBe('first');
  });

  it('outside a booted system, each save makes the newest the backup', async () => {
    await save('one');
    expect(states()).toEqual(['upperfs.squashfs']);
    await save('two');
    await save('three');
    expect(states()).toEqual(['upperfs-backup.squashfs', 'upperfs.squashfs']);
    expect(await marker('upperfs.squashfs')).toBe('three');
    expect(await marker('upperfs-backup.squashfs')).toBe('two');
  });

  it('after a backup boot, the backup stays and the newer state is kept as an older generation', async () => {
    const record = await bootRecord('backup', await idOf('upperfs-backup.squashfs'));
    const report = await save('four', ['--boot-record', record]);
    expect(await marker('upperfs.squashfs')).toBe('four');
    expect(await marker('upperfs-backup.squashfs')).toBe('two');
    expect(await marker('upperfs-gen-1.squashfs')).toBe('three');
    expect(report.kept).toEqual([{ state: 'upperfs.squashfs', as: 'upperfs-gen-1.squashfs' }]);

    // A second save in the same session replaces its own first save only.
    await save('five', ['--boot-record', record]);
    expect(states()).toEqual(['upperfs-backup.squashfs', 'upperfs-gen-1.squashfs', 'upperfs.squashfs']);
    expect(await marker('upperfs.squashfs')).toBe('five');
    expect(await marker('upperfs-backup.squashfs')).toBe('two');
  });

  it('cairn status lists the older generation and what the next default boot uses', async () => {
    const r = await cairn(['status', '--data', data, '--json']);
    const st = JSON.parse(r.stdout);
    expect(st.states.map((x: { boot: string }) => x.boot)).toEqual(['default', 'backup', 'gen-1']);
    expect(st.states.every((x: { intact: boolean }) => x.intact)).toBe(true);
    expect(st.nextDefaultBoot).toBe('default');
    const text = await cairn(['status', '--data', data]);
    expect(text.stdout).toMatch(/gen-1\s+upperfs-gen-1\.squashfs/);
  });

  it('after booting an older generation, that state becomes the backup and nothing unseen is lost', async () => {
    const record = await bootRecord('gen-1', await idOf('upperfs-gen-1.squashfs'), 'another-session');
    await save('six', ['--boot-record', record]);
    expect(await marker('upperfs.squashfs')).toBe('six');
    expect(await marker('upperfs-backup.squashfs')).toBe('three');
    // "five" was never replaced in the user's eyes: it is kept. "two" is the
    // parent of "three", which the user booted: seen replaced, so dropped.
    expect(await marker('upperfs-gen-2.squashfs')).toBe('five');
    expect(states()).toEqual(['upperfs-backup.squashfs', 'upperfs-gen-2.squashfs', 'upperfs.squashfs']);
  });

  it('prunes older generations past the configured count, oldest first', async () => {
    const conf = s.path('cairn.conf');
    await writeFile(conf, 'generations=1\n');
    for (const m of ['seven', 'eight']) {
      const record = await bootRecord('backup', await idOf('upperfs-backup.squashfs'), `session-${m}`);
      const r = await cairn(['--config', conf, 'save', '--upper', upper, '--data', data, '--boot-record', record, '--json']);
      expect(r.exitCode, r.stderr).toBe(0);
      void (await writeFile(join(upper, 'marker'), m));
    }
    const gens = states().filter((n) => n.startsWith('upperfs-gen-'));
    expect(gens).toHaveLength(1);
    expect(gens[0]).toBe('upperfs-gen-4.squashfs');
  });

  it('after a clean boot, a save is refused unless confirmed, and nothing is written', async () => {
    const record = await bootRecord('clean', '');
    const before = states().map((n) => `${n}:${statSync(join(data, n)).ino}`);
    await writeFile(join(upper, 'marker'), 'clean-session');
    const refused = await cairn(['save', '--upper', upper, '--data', data, '--boot-record', record]);
    expect(refused.exitCode).toBe(3);
    expect(refused.stderr).toMatch(/booted clean/);
    expect(refused.stderr).toMatch(/--yes/);
    expect(states().map((n) => `${n}:${statSync(join(data, n)).ino}`)).toEqual(before);
    expect(listDir(data)).not.toContain('upperfs.squashfs.tmp');

    const newestBefore = await marker('upperfs.squashfs');
    const ok = await cairn(['save', '--yes', '--upper', upper, '--data', data, '--boot-record', record]);
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(await marker('upperfs.squashfs')).toBe('clean-session');
    expect(await marker('upperfs-backup.squashfs')).toBe(newestBefore);
  });
});
