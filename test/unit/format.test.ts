import { describe, it, expect } from 'vitest';
import { formatBytes, formatDate, formatSeconds } from '../../src/lib/format.js';

describe('formatBytes', () => {
  it('shows whole bytes below 1 KiB', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1)).toBe('1 B');
    expect(formatBytes(1023)).toBe('1023 B');
  });

  it('uses binary units with one decimal', () => {
    expect(formatBytes(1024)).toBe('1.0 KiB');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(256 * 1024 ** 2)).toBe('256.0 MiB');
    expect(formatBytes(1.25 * 1024 ** 3)).toBe('1.3 GiB');
    expect(formatBytes(3 * 1024 ** 4)).toBe('3.0 TiB');
  });

  it('stops at TiB', () => {
    expect(formatBytes(2048 * 1024 ** 4)).toBe('2048.0 TiB');
  });

  it('keeps the sign of a negative amount', () => {
    expect(formatBytes(-2048)).toBe('-2.0 KiB');
    expect(formatBytes(-5)).toBe('-5 B');
  });
});

describe('formatSeconds', () => {
  it('shows tenths of a second under a minute', () => {
    expect(formatSeconds(0)).toBe('0.0 s');
    expect(formatSeconds(4.26)).toBe('4.3 s');
    expect(formatSeconds(59.5)).toBe('59.5 s');
  });

  it('shows minutes and seconds from a minute on', () => {
    expect(formatSeconds(60)).toBe('1 min 0 s');
    expect(formatSeconds(125)).toBe('2 min 5 s');
    expect(formatSeconds(3600)).toBe('60 min 0 s');
  });
});

describe('formatDate', () => {
  it('shows a unix time as UTC without milliseconds', () => {
    expect(formatDate(1_700_000_000)).toBe('2023-11-14 22:13:20 UTC');
    expect(formatDate(86_400)).toBe('1970-01-02 00:00:00 UTC');
  });

  it('shows an unknown time (0) as unknown', () => {
    expect(formatDate(0)).toBe('unknown');
  });
});
