import { mkdtemp, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeFileDurably } from '../../src/lib/durable.js';

describe('writeFileDurably', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-durable-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('writes a new file and replaces an old one, leaving no temp file', async () => {
    const f = join(dir, 'grub.cfg');
    await writeFileDurably(f, 'one\n');
    await writeFileDurably(f, 'two\n');
    expect(await readFile(f, 'utf8')).toBe('two\n');
    expect((await stat(f)).mode & 0o777).toBe(0o644 & ~process.umask());
    expect(await readdir(dir)).toEqual(['grub.cfg']);
  });

  it('overwrites a temp file left by a crash', async () => {
    const f = join(dir, 'grub.cfg');
    await writeFile(`${f}.tmp`, 'half a menu from before the crash, longer than the new one');
    await writeFileDurably(f, 'new\n');
    expect(await readFile(f, 'utf8')).toBe('new\n');
    expect(await readdir(dir)).toEqual(['grub.cfg']);
  });

  it('leaves the old file and removes its temp file when the rename fails', async () => {
    const f = join(dir, 'taken');
    await mkdir(f);
    await writeFile(join(f, 'inside'), 'x');
    await expect(writeFileDurably(f, 'new\n')).rejects.toThrow();
    expect((await stat(f)).isDirectory()).toBe(true);
    expect(await readdir(dir)).toEqual(['taken']);
  });
});
