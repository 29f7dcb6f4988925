/**
 * The patterns of cairn.conf's exclude= and exclude_add= as users write
 * them: with a leading / (as every path they know starts), a leading # or
 * spaces (a name's), doubled or trailing slashes. mksquashfs refused a
 * leading / outright, so every save failed; it took a leading # for a
 * comment, and then the verification found a file the patterns leave out.
 * Real `cairn save` (the built CLI), real mksquashfs and loop devices.
 */
import { execa } from 'execa';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, requireSystem, Scratch } from '../helpers/system.js';

describe('exclude patterns written as users write them', () => {
  const s = new Scratch();
  let upper: string;
  let data: string;
  let conf: string;
  afterAll(() => s.cleanup());

  beforeAll(async () => {
    requireSystem(['mksquashfs', 'unsquashfs']);
    upper = s.path('upper');
    for (const d of ['home/ann/Downloads/big', 'home/ann/notes', 'srv/www']) await mkdir(join(upper, d), { recursive: true });
    await writeFile(join(upper, 'home/ann/Downloads/film.mkv'), 'not worth keeping\n');
    await writeFile(join(upper, 'home/ann/Downloads/big/iso'), 'nor this\n');
    await writeFile(join(upper, 'home/ann/notes/#scratch'), 'an editor\'s scratch file\n');
    await writeFile(join(upper, 'home/ann/notes/todo'), 'kept\n');
    await writeFile(join(upper, 'srv/www/cache.db'), 'left out\n');
    await writeFile(join(upper, 'srv/www/index.html'), 'kept\n');
    data = await s.dataPartition();
    conf = s.path('cairn.conf');
    await writeFile(
      conf,
      ['exclude_add = /home/*/Downloads/*', 'exclude_add = "home/ann/notes/#*"', 'exclude_add = srv//www/cache.db/', 'compression = gzip', ''].join('\n'),
    );
  });

  it('saves, leaving out what they name and keeping the rest', async () => {
    const r = await cairn(['--config', conf, 'save', '--upper', upper, '--data', data, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const { stdout } = await execa('unsquashfs', ['-lls', join(data, 'upperfs.squashfs')]);
    const paths = stdout.split('\n').map((l) => l.replace(/^.*? squashfs-root/, '')).filter((p) => p.startsWith('/'));
    expect(paths).toEqual(expect.arrayContaining(['/home/ann/Downloads', '/home/ann/notes/todo', '/srv/www/index.html']));
    for (const gone of ['/home/ann/Downloads/film.mkv', '/home/ann/Downloads/big', '/home/ann/notes/#scratch', '/srv/www/cache.db']) {
      expect(paths, gone).not.toContain(gone);
    }
  });
});
