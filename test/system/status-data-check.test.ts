/**
 * What `cairn status` says of the check the boot gave the data partition
 * before mounting it (initramfs/lib/data.sh data_check, the boot record's
 * data_check): a partition left read-only needs repair, a repair is told.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, requireSystem, Scratch } from '../helpers/system.js';

const s = new Scratch();
beforeAll(() => requireSystem(['mkfs.ext4']));
afterAll(() => s.cleanup());

describe('cairn status after the boot checked the data partition', () => {
  it('says a partition the check left read-only needs repair, and what a repair did', async () => {
    const data = await s.dataPartition('data', 32);
    const run = s.path('run');
    await mkdir(run);
    const record = join(run, 'boot');
    await writeFile(record, 'requested=default\nused=default\ndata_check=errors left (e2fsck -p exited 4: UNEXPECTED INCONSISTENCY); mounted read-only\n');
    const left = await cairn(['status', '--quick', '--data', data, '--boot-record', record]);
    expect(left.exitCode, left.stderr).toBe(0);
    expect(left.stdout).toMatch(/^DATA PARTITION NEEDS REPAIR: errors left \(e2fsck -p exited 4: UNEXPECTED INCONSISTENCY\); mounted read-only; nothing is saved this session/m);
    await writeFile(record, 'requested=default\nused=default\ndata_check=repaired by e2fsck -p (check forced)\n');
    expect((await cairn(['status', '--quick', '--data', data, '--boot-record', record])).stdout).toMatch(/^data partition at boot: repaired by e2fsck -p \(check forced\)$/m);
    await writeFile(record, 'requested=default\nused=default\ndata_check=clean\n');
    expect((await cairn(['status', '--quick', '--data', data, '--boot-record', record])).stdout).not.toMatch(/data partition at boot|NEEDS REPAIR/i);
  });
});
