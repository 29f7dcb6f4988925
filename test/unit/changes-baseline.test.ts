import { mkdtempSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseBootRecord } from '../../src/bootRecord.js';
import { contentsThreshold, resolveBaseline, SAVED_MARK } from '../../src/changes/baseline.js';

describe('contentsThreshold', () => {
  const moment = { wallMs: 1_800_000_000_000, uptimeS: 10 };

  it('is the moment less a second of margin while the clock runs on', () => {
    expect(contentsThreshold(moment, { wallMs: moment.wallMs + 60_000, uptimeS: 70 })).toBe(moment.wallMs - 1000);
  });

  it('moves back as far as the clock was set back since (an RTC kept in local time, put right by NTP)', () => {
    // Two hours set back 30 s after the moment: a change now is stamped two hours before it.
    const now = { wallMs: moment.wallMs + 30_000 - 7_200_000 + 5_000, uptimeS: 45 };
    expect(contentsThreshold(moment, now)).toBe(moment.wallMs - 7_200_000 - 1000);
  });

  it('does not move forward when the clock was set forward', () => {
    expect(contentsThreshold(moment, { wallMs: moment.wallMs + 3_600_000, uptimeS: 20 })).toBe(moment.wallMs - 1000);
  });
});

describe('resolveBaseline', () => {
  const runDir = mkdtempSync(join(tmpdir(), 'cairn-baseline-'));
  afterAll(() => rm(runDir, { recursive: true, force: true }));
  const now = { wallMs: 1_800_000_100_000, uptimeS: 110 };
  const record = parseBootRecord('used=backup\nstate_id=booted-id\nunpacked_at=1800000000\nunpacked_uptime=10.00\n', 'boot');

  it('before any save, is the state booted from, as of the unpack', () => {
    expect(resolveBaseline(runDir, record, 'newest-id', now)).toEqual({
      since: 'boot',
      label: 'the boot (backup)',
      stateId: 'booted-id',
      contentsSinceMs: 1_800_000_000_000 - 1000,
    });
  });

  it('after a clean boot, is nothing: everything is added', () => {
    const clean = parseBootRecord('used=clean\nunpacked_at=1800000000\nunpacked_uptime=10\n', 'boot');
    expect(resolveBaseline(runDir, clean, 'newest-id', now)).toMatchObject({ stateId: undefined, label: 'the boot (clean)' });
  });

  it('from an initramfs that did not record the unpack, reads every file\'s contents', () => {
    const old = parseBootRecord('used=default\nstate_id=booted-id\n', 'boot');
    expect(resolveBaseline(runDir, old, undefined, now)).toMatchObject({ stateId: 'booted-id', contentsSinceMs: 0 });
  });

  it('after a save, is that save, as of its start', () => {
    writeFileSync(join(runDir, SAVED_MARK), 'state_id=saved-id\nstarted_ms=1800000050000\nstarted_uptime=60.000\n');
    expect(resolveBaseline(runDir, record, 'newest-id', now)).toEqual({
      since: 'save',
      label: 'the save at 2027-01-15 08:00:50 UTC',
      stateId: 'saved-id',
      contentsSinceMs: 1_800_000_050_000 - 1000,
    });
  });

  it('without a boot record, is the newest state with every file\'s contents read', () => {
    expect(resolveBaseline(undefined, undefined, 'newest-id', now)).toMatchObject({ stateId: 'newest-id', contentsSinceMs: 0 });
  });
});
