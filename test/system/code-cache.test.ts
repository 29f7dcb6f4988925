/**
 * The command as an image carries it (src/entry.mjs beside the bundled
 * runtime, dist/cairn.mjs and dist/cairn.cjs), copied into a directory of
 * its own: with no code cache it runs; CAIRN_CODE_CACHE=make (what the
 * image build runs) writes one; the next commands use it; a cache with a
 * damaged byte, or one made for other code, is refused by V8 and the
 * command still runs. The image build's own cache, made by Debian's
 * Node.js in the root, is checked in test/system/deb-hook.test.ts.
 */
import { execa } from 'execa';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let dir: string;
const entry = () => join(dir, 'cairn.mjs');
const cache = () => join(dir, 'cairn.cjs.cache');

async function cairn(args: string[], mode?: 'make' | 'check') {
  return execa(process.execPath, [entry(), ...args], { reject: false, env: mode ? { CAIRN_CODE_CACHE: mode } : {}, stdin: 'ignore' });
}

describe('the command and its code cache', () => {
  beforeAll(() => {
    for (const f of ['dist/cairn.mjs', 'dist/cairn.cjs']) if (!existsSync(f)) throw new Error(`${f} is missing: run npm run build`);
    dir = mkdtempSync(join(tmpdir(), 'cairn-code-cache-'));
    copyFileSync(resolve('dist/cairn.mjs'), entry());
    copyFileSync(resolve('dist/cairn.cjs'), join(dir, 'cairn.cjs'));
  });

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('runs without a cache, and says it has none', async () => {
    const r = await cairn(['--version'], 'check');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^\d+\.\d+\.\d+$/);
    expect(r.stderr).toBe('cairn: code cache missing');
  });

  it('writes a cache when asked, and the next commands use it', async () => {
    const made = await cairn(['help', 'save'], 'make');
    expect(made.exitCode, made.stderr).toBe(0);
    expect(existsSync(cache())).toBe(true);
    expect(existsSync(`${cache()}.tmp`)).toBe(false);
    const r = await cairn(['--version'], 'check');
    expect(r.stderr).toBe('cairn: code cache used');
    // A command that fails still fails the same way with it.
    const bad = await cairn(['no-such-command']);
    expect(bad.exitCode).not.toBe(0);
    expect(bad.stderr).toMatch(/unknown command/);
  });

  it('refuses a damaged cache, or one made for other code, and runs as without one', async () => {
    const good = readFileSync(cache());
    const damaged = Buffer.from(good);
    damaged[Math.floor(damaged.length / 2)]! ^= 0xff;
    writeFileSync(cache(), damaged);
    let r = await cairn(['--version'], 'check');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^\d+\.\d+\.\d+$/);
    expect(r.stderr).toBe('cairn: code cache refused');

    // The runtime changed under the cache, its length the same (V8 itself would take the cache).
    writeFileSync(cache(), good);
    const code = readFileSync(join(dir, 'cairn.cjs'), 'utf8');
    const m = /VERSION = "([\d.]+)"/.exec(code);
    expect(m).not.toBeNull();
    const other = m![1]!.replace(/\d/g, '9');
    writeFileSync(join(dir, 'cairn.cjs'), code.replace(m![0], `VERSION = "${other}"`));
    r = await cairn(['--version'], 'check');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe(other);
    expect(r.stderr).toBe('cairn: code cache refused');
  });
});
