import { readFileSync } from 'node:fs';
import { mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, catFromImage, listDir, requireSystem, Scratch } from '../helpers/system.js';

const session = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();

/**
 * A session that fell back past states (they did not fit, or failed their
 * check) never lets its saves remove them (DESIGN.md "Boot"), and a state
 * whose bytes rotted since the boot never takes the backup's place
 * (DESIGN.md "Save"). Real saves on a real ext4 data partition; the boot
 * records are written as the initramfs writes them.
 */
describe('states a boot fell back past are held', () => {
  const s = new Scratch();
  let data: string;
  let upper: string;
  let conf: string;

  const idOf = async (name: string): Promise<string> => {
    const st = JSON.parse((await cairn(['status', '--data', data, '--json', '--quick'])).stdout);
    return st.states.find((x: { name: string }) => x.name === name).id;
  };
  const record = async (fields: Record<string, string>) => {
    const path = s.path(`boot-${Math.random().toString(36).slice(2)}`);
    await writeFile(path, `${Object.entries({ upper: 'tmpfs', session, ...fields }).map(([k, v]) => `${k}=${v}`).join('\n')}\n`);
    return path;
  };
  const save = async (marker: string, extra: string[] = []) => {
    await writeFile(join(upper, 'marker'), marker);
    const r = await cairn(['--config', conf, 'save', '--upper', upper, '--data', data, '--json', ...extra]);
    expect(r.exitCode, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as { held: { state: string; reason: string }[]; pruned: string[]; kept: { state: string; as: string }[] };
  };
  const markers = async () => {
    const out: string[] = [];
    for (const n of listDir(data).filter((x) => x.endsWith('.squashfs'))) out.push(await catFromImage(join(data, n), 'marker'));
    return out.sort();
  };

  beforeAll(async () => {
    requireSystem();
    data = await s.dataPartition();
    upper = s.path('upper');
    await mkdir(upper);
    conf = s.path('cairn.conf');
    // One older generation at most: what survives beyond it survives by the hold.
    await writeFile(conf, 'generations=1\n');
  });
  afterAll(() => s.cleanup());

  it('a session that fell back to clean past both states keeps them through later saves, and says so', async () => {
    await save('B');
    await save('N');
    const skipped = `${await idOf('upperfs.squashfs')} ${await idOf('upperfs-backup.squashfs')}`;
    const fallback =
      'upperfs.squashfs does not fit in the upper layer (needs 900 MiB, 500 MiB free; see cairn.upper_size); upperfs-backup.squashfs does not fit in the upper layer (needs 800 MiB, 500 MiB free; see cairn.upper_size)';
    const fellBack = await record({ requested: 'default', used: 'clean', state_id: '', fallback, skipped, session: 'boot-fell-back' });
    const first = await save('S1', ['--boot-record', fellBack]);
    expect(first.held.map((h) => h.state).sort()).toEqual(['upperfs-backup.squashfs', 'upperfs.squashfs']);
    expect(first.held[0]!.reason).toMatch(/does not fit in the upper layer/);
    // Later sessions boot the newest as usual; generations=1 keeps one older state only.
    for (const m of ['S2', 'S3', 'S4']) {
      const r = await record({ requested: 'default', used: 'default', state_id: await idOf('upperfs.squashfs'), session: `boot-${m}` });
      await save(m, ['--boot-record', r]);
    }
    expect(await markers()).toEqual(expect.arrayContaining(['B', 'N', 'S3', 'S4']));

    const status = await cairn(['status', '--data', data, '--quick']);
    expect(status.stdout).toMatch(/HELD: these states were not booted/);
    expect(status.stdout).toMatch(/gen-\d+\s+a boot fell back past it: upperfs.squashfs does not fit/);
    const json = JSON.parse((await cairn(['status', '--data', data, '--quick', '--json'])).stdout);
    expect(json.states.filter((x: { held?: string }) => x.held).length).toBe(2);
  });

  it('cairn release refuses a state that is not held, then releases, and the next save prunes as configured', async () => {
    const wrong = await cairn(['release', '--data', data, 'gen-99']);
    expect(wrong.exitCode).toBe(2);
    expect(wrong.stderr).toMatch(/gen-99 is not a held state \(held: gen-\d+, gen-\d+\)/);
    const none = await cairn(['release', '--data', data]);
    expect(none.exitCode).toBe(2);

    const r = await cairn(['release', '--data', data, '--all']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^released gen-\d+, gen-\d+: saves prune them as usual/);
    expect(listDir(data)).not.toContain('.cairn-held');
    const next = await record({ requested: 'default', used: 'default', state_id: await idOf('upperfs.squashfs'), session: 'boot-S5' });
    const report = await save('S5', ['--boot-record', next]);
    expect(report.held).toEqual([]);
    expect(report.pruned.length).toBeGreaterThan(0);
    expect(listDir(data).filter((n) => n.startsWith('upperfs-gen-'))).toHaveLength(1);
  });

  it('a release stays a release for the rest of the session that fell back: its next save does not hold them again', async () => {
    await save('P');
    const pId = await idOf('upperfs.squashfs');
    const fellBack = await record({
      requested: 'default',
      used: 'backup',
      state_id: await idOf('upperfs-backup.squashfs'),
      fallback: 'upperfs.squashfs fails its checksum (sha256 mismatch)',
      skipped: pId,
      session: 'boot-release',
    });
    expect((await save('Q', ['--boot-record', fellBack])).held).toHaveLength(1);
    const r = await cairn(['release', '--data', data, '--all']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect((await save('R', ['--boot-record', fellBack])).held).toEqual([]);
    expect(JSON.parse((await cairn(['status', '--data', data, '--quick', '--json'])).stdout).states.some((x: { held?: string }) => x.held)).toBe(false);
    // The next session drops the session's mark: nothing is left on the stick.
    const later = await record({ requested: 'default', used: 'default', state_id: await idOf('upperfs.squashfs'), session: 'boot-after-release' });
    await save('S', ['--boot-record', later]);
    expect(listDir(data)).not.toContain('.cairn-held');
  });

  it('booting a held state releases it: the user has seen it', async () => {
    await save('X');
    const xId = await idOf('upperfs.squashfs');
    const fellBack = await record({
      requested: 'default',
      used: 'backup',
      state_id: await idOf('upperfs-backup.squashfs'),
      fallback: 'upperfs.squashfs fails its checksum (sha256 mismatch)',
      skipped: xId,
      session: 'boot-fb2',
    });
    const first = await save('Y', ['--boot-record', fellBack]);
    expect(first.held.map((h) => h.state)).toEqual(['upperfs.squashfs']);
    const genOfX = first.kept.find((k) => k.state === 'upperfs.squashfs')!.as;
    expect(await catFromImage(join(data, genOfX), 'marker')).toBe('X');
    const bootedX = await record({ requested: `gen-${/(\d+)/.exec(genOfX)![1]}`, used: `gen-${/(\d+)/.exec(genOfX)![1]}`, state_id: xId, session: 'boot-x' });
    const after = await save('Z', ['--boot-record', bootedX]);
    expect(after.held).toEqual([]);
    expect(listDir(data)).not.toContain('.cairn-held');
  });
});

describe('a state whose bytes rotted since the boot', () => {
  const s = new Scratch();
  afterAll(() => s.cleanup());

  it('never becomes the backup: the intact backup stays and the damaged state is kept', async () => {
    requireSystem();
    const data = await s.dataPartition('rot');
    const upper = s.path('upper-rot');
    await mkdir(upper);
    const saveWith = async (marker: string, extra: string[] = []) => {
      await writeFile(join(upper, 'marker'), marker);
      const r = await cairn(['save', '--upper', upper, '--data', data, '--json', ...extra]);
      expect(r.exitCode, r.stderr).toBe(0);
      return JSON.parse(r.stdout);
    };
    await saveWith('good-backup');
    await saveWith('newest');
    const st = JSON.parse((await cairn(['status', '--data', data, '--json', '--quick'])).stdout);
    const newestId = st.states.find((x: { name: string }) => x.name === 'upperfs.squashfs').id;
    // The session booted the newest (intact then); a byte of it flips before shutdown. The seal stays intact.
    const fh = await open(join(data, 'upperfs.squashfs'), 'r+');
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, 2000);
    b[0] = b[0]! ^ 0x40;
    await fh.write(b, 0, 1, 2000);
    await fh.close();
    const rec = s.path('boot-rot');
    await writeFile(rec, `requested=default\nused=default\nstate_id=${newestId}\nupper=tmpfs\nsession=boot-rot\n`);
    await saveWith('session', ['--boot-record', rec]);
    expect(await catFromImage(join(data, 'upperfs.squashfs'), 'marker')).toBe('session');
    expect(await catFromImage(join(data, 'upperfs-backup.squashfs'), 'marker')).toBe('good-backup');
    // The damaged one is kept as an older state, not dropped: the user may still want what it holds.
    expect(listDir(data)).toContain('upperfs-gen-1.squashfs');
  });
});
