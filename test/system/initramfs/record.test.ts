/**
 * The boot record's date of the unpack (record_write, busybox sh): what
 * `cairn diff` takes as the moment from which files count as changed.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseBootRecord } from '../../../src/bootRecord.js';
import { requireRoot, requireTools } from '../../helpers/initramfs-env.js';
import { Sandbox } from './fixtures.js';

let sb: Sandbox;

beforeAll(async () => {
  requireRoot('each script runs in its own mount namespace');
  requireTools(['busybox', 'unshare']);
  sb = await Sandbox.create('record');
});

afterAll(async () => {
  await sb?.cleanup();
});

describe('record_write', () => {
  it('dates the unpack by the wall clock and by the time since boot', async () => {
    const root = await sb.root('root-uptime');
    await writeFile(`${root}/proc/uptime`, '1234.56 2000.00\n');
    const before = Math.floor(Date.now() / 1000);
    const r = await sb.lib('cairn_used=default; cairn_boot=default; record_write || exit 14', { root, binds: [], run: false });
    expect(r.exitCode, r.stderr).toBe(0);
    const record = parseBootRecord(await readFile(`${root}/run/cairn/boot`, 'utf8'), 'boot');
    expect(record.unpacked?.uptimeS).toBe(1234.56);
    expect(record.unpacked?.wallMs).toBeGreaterThanOrEqual(before * 1000);
    expect(record.unpacked?.wallMs).toBeLessThanOrEqual(Date.now());
  });

  it('without /proc/uptime, leaves the unpack undated: cairn diff then reads every file', async () => {
    const root = await sb.root('root-no-uptime');
    const r = await sb.lib('cairn_used=default; cairn_boot=default; record_write || exit 14', { root, binds: [], run: false });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(parseBootRecord(await readFile(`${root}/run/cairn/boot`, 'utf8'), 'boot').unpacked).toBeUndefined();
  });
});
