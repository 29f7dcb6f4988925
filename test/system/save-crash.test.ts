import { execa } from 'execa';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseBootRecord } from '../../src/bootRecord.js';
import { DEFAULTS } from '../../src/config.js';
import { runSave } from '../../src/save/pipeline.js';
import { listStates } from '../../src/state/states.js';
import { snapshot } from '../helpers/states.js';
import { CLI, requireSystem, Scratch } from '../helpers/system.js';

const session = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();

/**
 * A crash at any moment of a save leaves a valid newest and a valid backup,
 * each the new state or one that was there before, and loses no state the
 * user has not seen replaced.
 */
describe('a save stopped after each of its steps in turn', () => {
  const s = new Scratch();
  let partition: string;
  let upper: string;
  beforeAll(async () => {
    requireSystem();
    partition = await s.dataPartition('crash', 512);
    upper = s.path('upper');
    await mkdir(upper);
  });
  afterAll(() => s.cleanup());

  /** A data dir holding "old" as the backup and "new" as the newest state. */
  const prepared = async (name: string) => {
    const data = join(partition, name);
    await mkdir(data);
    for (const marker of ['old', 'new']) {
      await writeFile(join(upper, 'marker'), marker);
      await save(data, undefined);
    }
    await writeFile(join(upper, 'marker'), 'next');
    return data;
  };
  const save = (data: string, bootRecord: ReturnType<typeof parseBootRecord> | undefined, stopAfterSteps?: number) =>
    runSave({
      upperDir: upper,
      dataDir: data,
      bootRecord,
      session,
      config: { ...DEFAULTS, excludes: [...DEFAULTS.excludes] },
      confirmCleanSave: async () => false,
      stopAfterSteps,
    });

  const scenarios = [
    {
      name: 'outside a booted system',
      record: async () => undefined,
      // The newest is the state the session came from: it becomes the backup.
      allowedNewest: ['new', 'next'],
      allowedBackup: ['old', 'new'],
      mustSurvive: ['new'],
      final: { newest: 'next', backup: 'new', generations: [] as string[] },
    },
    {
      name: 'after a backup boot',
      record: async (data: string) => {
        const backup = (await listStates(data)).find((x) => x.role === 'backup')!;
        return parseBootRecord(`used=backup\nstate_id=${backup.check.seal!.id}\nsession=${session}\n`, 'test');
      },
      allowedNewest: ['new', 'next'],
      allowedBackup: ['old'],
      // "new" was never seen replaced: it must keep a name at every instant.
      mustSurvive: ['new', 'old'],
      final: { newest: 'next', backup: 'old', generations: ['new'] },
    },
  ];

  for (const sc of scenarios) {
    it(`${sc.name}: every prefix of the steps leaves valid states`, async () => {
      const probe = await prepared(`${sc.name.replace(/\W+/g, '-')}-probe`);
      const total = (await save(probe, await sc.record(probe))).stepsTotal;
      expect(total).toBeGreaterThanOrEqual(6);
      for (let k = 0; k <= total; k++) {
        const data = await prepared(`${sc.name.replace(/\W+/g, '-')}-${k}`);
        const record = await sc.record(data);
        const partial = await save(data, record, k);
        expect(partial.stepsRun).toBe(k);
        const after = await snapshot(data);
        const where = `after ${k} of ${total} steps`;
        expect(sc.allowedNewest, where).toContain(after.newest);
        expect(sc.allowedBackup, where).toContain(after.backup);
        const alive = [after.newest, after.backup, ...after.generations];
        for (const m of sc.mustSurvive) expect(alive, `${where}: "${m}" lost`).toContain(m);
        expect(after.stray, where).toEqual([]);

        // The next save (after a crash; a whole save needs none) finishes the
        // job and leaves nothing behind.
        if (k < total) await save(data, record);
        const done = await snapshot(data);
        expect({ newest: done.newest, backup: done.backup, generations: done.generations }, where).toEqual(sc.final);
        const names = (await execa('ls', ['-A', data])).stdout.split('\n');
        expect(names.filter((n) => n.endsWith('.tmp') || n.endsWith('.next') || n.startsWith('.cairn-save')), where).toEqual([]);
      }
    });
  }
});

describe('a real cairn save killed with SIGKILL at random moments', () => {
  const s = new Scratch();
  let data: string;
  let upper: string;
  const kills = Number(process.env.CAIRN_KILL_ROUNDS ?? 30);

  beforeAll(async () => {
    requireSystem();
    data = await s.dataPartition('killed', 1024);
    upper = s.path('upper');
    await mkdir(join(upper, 'many'), { recursive: true });
    // Large enough that a save takes about a second: kills land in every phase.
    await execa('dd', ['if=/dev/urandom', `of=${join(upper, 'random')}`, 'bs=1M', 'count=48', 'status=none']);
    await execa('sh', ['-c', `yes cairn | head -c 64M > ${join(upper, 'text')}`]);
    for (let i = 0; i < 300; i++) await writeFile(join(upper, 'many', `f${i}`), `file ${i}\n`.repeat(i));
  });
  afterAll(() => s.cleanup());

  const fullSave = async (marker: string) => {
    await writeFile(join(upper, 'marker'), marker);
    const r = await execa(process.execPath, [CLI, 'save', '--upper', upper, '--data', data, '--json'], { reject: false });
    if (r.exitCode !== 0) throw new Error(`save ${marker} failed: ${r.stderr}`);
    return JSON.parse(r.stdout) as { seconds: number };
  };

  it(`survives ${kills} kills in a row, and the next save cleans up after them`, async () => {
    await fullSave('m0');
    const duration = (await fullSave('m1')).seconds * 1000;
    let newest = 'm1';
    let backup = 'm0';
    const landed: number[] = [];
    for (let i = 2; i < kills + 2; i++) {
      const marker = `m${i}`;
      await writeFile(join(upper, 'marker'), marker);
      const child = execa(process.execPath, [CLI, 'save', '--upper', upper, '--data', data], { reject: false });
      const delay = Math.random() * (duration + 300);
      await new Promise((r) => setTimeout(r, delay));
      child.kill('SIGKILL');
      await child;
      const after = await snapshot(data);
      const where = `kill ${i - 1} after ${delay.toFixed(0)} ms`;
      // Either the save got through (new newest, old newest as backup) or not.
      if (after.newest === marker) {
        expect(after.backup, where).toBe(newest);
        backup = newest;
        newest = marker;
        landed.push(i);
      } else {
        expect(after.newest, where).toBe(newest);
        expect([backup, newest], where).toContain(after.backup);
      }
      expect(after.stray, where).toEqual([]);
    }
    // A killed save may leave its verify mount and loop device: the next save removes them.
    await fullSave('final');
    const after = await snapshot(data);
    expect(after.newest).toBe('final');
    expect(after.backup).toBe(newest);
    const loops = (await execa('losetup', ['--list', '--noheadings', '--output', 'BACK-FILE'])).stdout;
    expect(loops).not.toContain(join(data, 'upperfs.squashfs.tmp'));
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
    expect(mounts).not.toMatch(/cairn-verify-/);
    expect(await execa('pgrep', ['-f', `mksquashfs ${upper}`], { reject: false }).then((r) => r.stdout)).toBe('');
    console.log(`${kills} kills, ${landed.length} saves completed before their kill, ${kills - landed.length} interrupted`);
  }, 900_000);
});
