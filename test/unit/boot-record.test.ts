import { describe, it, expect } from 'vitest';
import { parseBootRecord } from '../../src/bootRecord.js';
import { UsageError } from '../../src/lib/errors.js';

const SRC = '/run/cairn/boot';

const full = [
  'requested=default',
  'used=backup',
  'state_id=0b7c3f7e-2d5e-4a51-9c59-3d1d2f1d9a10',
  'fallback=upperfs.squashfs: checksum mismatch',
  'skipped=0f1e2d3c-0000-4000-8000-000000000002 ino:1234',
  'data_check=repaired by e2fsck -p (cairn-data was not cleanly unmounted, check forced.)',
  'grow=partition grown from 1791 MiB to 59343 MiB; file system grown from 1791 MiB to 59343 MiB',
  'upper=zram',
  'upper_size=2147483648',
  'kernel=6.6.8-0-lts',
  'session=c1f0d7a2-1e0b-4b1a-9d5e-2f7b8a6c4d11',
  '',
].join('\n');

describe('parseBootRecord', () => {
  it('reads a full record as the initramfs writes it', () => {
    expect(parseBootRecord(full, SRC)).toEqual({
      requested: 'default',
      used: 'backup',
      stateId: '0b7c3f7e-2d5e-4a51-9c59-3d1d2f1d9a10',
      fallback: 'upperfs.squashfs: checksum mismatch',
      skipped: ['0f1e2d3c-0000-4000-8000-000000000002', 'ino:1234'],
      chain: 0,
      chainDropped: [],
      dataCheck: 'repaired by e2fsck -p (cairn-data was not cleanly unmounted, check forced.)',
      grow: 'partition grown from 1791 MiB to 59343 MiB; file system grown from 1791 MiB to 59343 MiB',
      rollback: '',
      upper: 'zram',
      upperSize: 2147483648,
      kernel: '6.6.8-0-lts',
      session: 'c1f0d7a2-1e0b-4b1a-9d5e-2f7b8a6c4d11',
    });
  });

  it('reads when the upper layer was filled, by the wall clock and the time since boot', () => {
    const r = parseBootRecord('used=default\nunpacked_at=1800000000\nunpacked_uptime=12.34\n', SRC);
    expect(r.unpacked).toEqual({ wallMs: 1_800_000_000_000, uptimeS: 12.34 });
    // An older initramfs's record, or one written without /proc/uptime: unknown.
    expect(parseBootRecord('used=default\n', SRC).unpacked).toBeUndefined();
    expect(parseBootRecord('used=default\nunpacked_at=1800000000\nunpacked_uptime=\n', SRC).unpacked).toBeUndefined();
  });

  it('reads a chain booted with its links, or cut short with the links it dropped', () => {
    expect(parseBootRecord('used=default\nchain=3\nchain_dropped=\n', SRC)).toMatchObject({ chain: 3, chainDropped: [] });
    const cut = parseBootRecord('used=default\nstate_id=d1\nskipped=d3\nchain=1\nchain_dropped=d2.squashfs upperfs.squashfs\n', SRC);
    expect(cut).toMatchObject({ stateId: 'd1', skipped: ['d3'], chain: 1, chainDropped: ['d2.squashfs', 'upperfs.squashfs'] });
    // A whole state's record from an older initramfs, or a value no initramfs writes.
    for (const line of ['', 'chain=', 'chain=x', 'chain=-1']) expect(parseBootRecord(`used=default\n${line}\n`, SRC).chain, line).toBe(0);
  });

  it('keeps an = inside a value', () => {
    expect(parseBootRecord('used=default\nfallback=a=b\n', SRC).fallback).toBe('a=b');
  });

  it('a clean boot has an empty state id', () => {
    const r = parseBootRecord('requested=clean\nused=clean\nstate_id=\nupper=tmpfs\n', SRC);
    expect(r).toMatchObject({ requested: 'clean', used: 'clean', stateId: '', upper: 'tmpfs' });
  });

  it('a minimal record takes requested from used and leaves the rest empty', () => {
    expect(parseBootRecord('used=default', SRC)).toEqual({
      requested: 'default',
      used: 'default',
      stateId: '',
      fallback: '',
      skipped: [],
      chain: 0,
      chainDropped: [],
      dataCheck: '',
      grow: '',
      rollback: '',
      upper: '',
      upperSize: undefined,
      kernel: '',
      session: '',
    });
  });

  for (const used of ['default', 'backup', 'clean', 'gen-1', 'gen-12']) {
    it(`accepts used=${used}`, () => {
      expect(parseBootRecord(`requested=${used}\nused=${used}\n`, SRC).used).toBe(used);
    });
  }

  it('a missing used is a UsageError naming the file', () => {
    const f = () => parseBootRecord('requested=default\nstate_id=abc\n', SRC);
    expect(f).toThrow(UsageError);
    expect(f).toThrow(SRC);
    expect(f).toThrow(/missing/);
    expect(() => parseBootRecord('', SRC)).toThrow(UsageError);
    expect(() => parseBootRecord('used=\n', SRC)).toThrow(UsageError);
  });

  for (const used of ['newest', 'gen-0', 'gen-01', 'gen-', 'gen-x', 'Default', 'default backup', 'gen-1a']) {
    it(`used=${used} is a UsageError quoting the value`, () => {
      const f = () => parseBootRecord(`used=${used}\n`, SRC);
      expect(f).toThrow(UsageError);
      expect(f).toThrow(`"${used}"`);
    });
  }

  it('an upper_size that is not a positive number is left unknown', () => {
    for (const s of ['', 'abc', '0', '-5']) {
      expect(parseBootRecord(`used=default\nupper_size=${s}\n`, SRC).upperSize, s).toBeUndefined();
    }
  });
});
