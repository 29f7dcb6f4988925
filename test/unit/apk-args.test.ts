import { describe, expect, it } from 'vitest';
import { deduceApplet, optionValue, optionValues, parseApkArgs, repositoryOptions, verbosity, withOptionsAppended } from '../../src/apk/args.js';

// The argument lists apk-tools 2.14 reads: applet by deduce_applet, options by musl getopt_long.
describe('apk command lines, read as apk-tools 2.14 reads them', () => {
  it('finds the applet after options that take values, in every form', () => {
    for (const argv of [
      ['--root', '/mnt', 'add', 'linux-lts'],
      ['--root=/mnt', 'add', 'linux-lts'],
      ['-p', '/mnt', 'add', 'linux-lts'],
      ['-p/mnt', 'add', 'linux-lts'],
      ['-X', 'https://mirror/main', '--repositories-file', '/etc/r', 'add', 'linux-lts'],
      ['--keys-dir', '/k', '--cache-dir', '/c', '--wait', '30', 'add', 'linux-lts'],
      ['-qUX', 'https://mirror/main', 'add', 'linux-lts'],
      ['add', '-X', 'https://mirror/main', 'linux-lts'],
      ['add', 'linux-lts', '--root', '/mnt'],
    ]) {
      const p = parseApkArgs(argv);
      expect(p.applet, argv.join(' ')).toBe('add');
      expect(p.positionals, argv.join(' ')).toEqual(['linux-lts']);
      expect(p.stopsEarly).toBe(false);
    }
  });

  it('takes values as apk does, the last one winning', () => {
    const p = parseApkArgs(['-X', 'a', '--repository=b', '--repo', 'c', '-p', '/x', '--root=/y', 'upgrade', '-a']);
    expect(optionValues(p, 'repository')).toEqual(['a', 'b']);
    // "--repo" is a prefix of --repository and --repositories-file: ambiguous, so unknown; "c" stays an
    // operand, and the applet's name is only taken off when it is the first operand (apk.c main).
    expect(p.positionals).toEqual(['c', 'upgrade']);
    expect(optionValue(p, 'root')).toBe('/y');
    expect(p.options.some((o) => o.name === 'available')).toBe(true);
  });

  it('accepts unique prefixes of long options, as getopt_long does', () => {
    const p = parseApkArgs(['add', '--allow-untr', '--sim', 'linux-lts']);
    expect(p.options.map((o) => o.name)).toEqual(['allow-untrusted', 'simulate']);
  });

  it('deduces the applet as apk does, even from an option value', () => {
    expect(deduceApplet(['-X', 'fix', 'add', 'x'])).toBe('fix');
    const p = parseApkArgs(['-X', 'fix', 'add', 'x']);
    expect(p.applet).toBe('fix');
    expect(p.positionals).toEqual(['add', 'x']);
  });

  it('ends options at --, and keeps operands after it', () => {
    const p = parseApkArgs(['add', '--', '-weird-name', '--root']);
    expect(p.positionals).toEqual(['-weird-name', '--root']);
    expect(p.terminator).toBe(1);
    expect(withOptionsAppended(p, ['--simulate'])).toEqual(['add', '--simulate', '--', '-weird-name', '--root']);
  });

  it('knows when apk stops before doing anything', () => {
    expect(parseApkArgs(['add', '--help']).stopsEarly).toBe(true);
    expect(parseApkArgs(['-V']).stopsEarly).toBe(true);
    expect(parseApkArgs(['add', 'x', '--bogus']).stopsEarly).toBe(true);
    // apk only gives up when the last option it read was unknown.
    expect(parseApkArgs(['add', '--bogus', '-U', 'x']).stopsEarly).toBe(false);
    expect(parseApkArgs(['add', '--root']).stopsEarly).toBe(true);
    expect(parseApkArgs(['frobnicate']).stopsEarly).toBe(true);
  });

  it('reads applet options only for the applet that has them', () => {
    expect(parseApkArgs(['add', '-t', '.virt', 'x']).positionals).toEqual(['x']);
    expect(optionValue(parseApkArgs(['add', '--virtual=.virt', 'x']), 'virtual')).toBe('.virt');
    expect(parseApkArgs(['fix', '-r', 'linux-lts']).options.map((o) => o.name)).toEqual(['reinstall']);
  });

  it('counts verbosity and carries repository options over', () => {
    const p = parseApkArgs(['-qq', '-v', 'add', '-X', 'r1', '--no-network', '--cache-dir', '/c', '-i', 'x']);
    expect(verbosity(p)).toBe(0);
    expect(repositoryOptions(p)).toEqual(['--repository=r1', '--no-network', '--cache-dir=/c']);
  });
});
