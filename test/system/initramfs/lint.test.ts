/**
 * The initramfs's sh as STYLE.md wants it: clean under shellcheck -s sh
 * (with initramfs/.shellcheckrc), formatted by shfmt -i 2 -ci, and every
 * library file sourced by init.
 */
import { execa } from 'execa';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { requireTools } from '../../helpers/initramfs-env.js';
import { INIT, LIB } from './fixtures.js';

const files = () => [INIT, ...readdirSync(LIB).filter((f) => f.endsWith('.sh')).map((f) => join(LIB, f))];

beforeAll(() => {
  requireTools(['shellcheck', 'shfmt']);
});

describe('initramfs sh', () => {
  it('passes shellcheck -s sh', async () => {
    const r = await execa('shellcheck', ['-s', 'sh', ...files()], { reject: false });
    expect(r.stdout, r.stdout).toBe('');
    expect(r.exitCode).toBe(0);
  });

  it('uses no variable that no file of the library assigns (the whole library as one file)', async () => {
    const lib = readdirSync(LIB)
      .filter((f) => f.endsWith('.sh'))
      .map((f) => readFileSync(join(LIB, f), 'utf8'))
      .join('\n');
    const r = await execa('shellcheck', ['--norc', '-s', 'sh', '-i', 'SC2154', '-'], { input: lib, reject: false });
    expect(r.stdout, r.stdout).toBe('');
  });

  it('is formatted with shfmt -i 2 -ci', async () => {
    const r = await execa('shfmt', ['-i', '2', '-ci', '-d', ...files()], { reject: false });
    expect(r.stdout, r.stdout).toBe('');
    expect(r.exitCode).toBe(0);
  });

  it('has init source every file of the library', () => {
    const init = readFileSync(INIT, 'utf8');
    const sourced = [...init.matchAll(/^\. "\$CAIRN_LIB\/([a-z]+\.sh)"$/gm)].map((m) => m[1]);
    const present = readdirSync(LIB).filter((f) => f.endsWith('.sh'));
    expect([...sourced].sort()).toEqual([...present].sort());
    expect(sourced.slice(0, 2)).toEqual(['names.sh', 'config.sh']);
  });
});
