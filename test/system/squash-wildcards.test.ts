/**
 * The exclude lines a checkpoint (and a save) gives mksquashfs -wildcards:
 * each leaves out exactly the names it should, whatever bytes they hold.
 * Real mksquashfs, and the image unpacked by real unsquashfs and read
 * back as bytes.
 */
import { execa } from 'execa';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { allButExclude, excludeFromDir, literalExclude } from '../../src/save/wildcards.js';
import { requireSystem, Scratch } from '../helpers/system.js';

/** Names that mean something to fnmatch, to mksquashfs's exclude file or to a shell. */
const HOSTILE = [
  'plain', 'a.b', '.hidden', '..dots', '...', ' lead', 'trail ', '#hash', '-dash', '!bang', '!(neg)', '@(at)', '+(plus)', '*(star)', '?(q)',
  'x|y', 'p(q)', 'st*r', 'q?r', 'br[1]', 'e]f', '[!a]', 'back\\sl', 'tab\tx', 'per%cent', 'dol$lar', "quo'te", 'dq"uote',
  'semi;colon', 'brace{a,b}', 'ti~lde', 'nl\nx', '\\', '|', '(', ')', '*', '?', '[', '!', 'no\xff\xfeutf8',
];

const asBytes = (latin1: string) => Buffer.from(latin1, 'latin1');

/** The names mksquashfs kept of the directory DIR of SOURCE, given the exclude LINES. */
async function keptBy(s: Scratch, source: string, dir: string, lines: Buffer[]): Promise<string[]> {
  const exclude = s.path('exclude');
  const image = s.path('image.sqfs');
  const out = s.path('out');
  rmSync(out, { recursive: true, force: true });
  writeFileSync(exclude, Buffer.concat(lines));
  await execa('mksquashfs', [source, image, '-noappend', '-quiet', '-no-progress', '-comp', 'gzip', '-wildcards', '-ef', exclude]);
  await execa('unsquashfs', ['-no-progress', '-d', out, image]);
  return readdirSync(asBytes(join(out, dir)), 'latin1').sort();
}

describe('mksquashfs -wildcards exclude lines (real mksquashfs)', () => {
  requireSystem(['mksquashfs', 'unsquashfs']);
  const s = new Scratch();
  afterAll(() => s.cleanup());
  /** The directory the names are in: hostile itself, below the tree's root. */
  const dir = 'top dir/we!rd (d)|*[x]';
  const source = s.path('source');
  mkdirSync(join(source, dir), { recursive: true });
  for (const name of HOSTILE) {
    if (name === 'plain' || name === '...') mkdirSync(asBytes(join(source, dir, name)));
    else writeFileSync(asBytes(join(source, dir, name)), name);
  }
  writeFileSync(join(source, dir, 'plain', 'inside'), 'kept with its directory');
  const all = [...HOSTILE].sort();

  it('leaves out exactly the names a split gives, both ways of writing it, for many splits', async () => {
    // Every name kept alone, every name left out alone, and halves: the
    // shorter form is picked each time, so both forms are met.
    const splits: string[][] = [...all.map((n) => [n]), ...all.map((n) => all.filter((m) => m !== n)), all.filter((_, i) => i % 2 === 0)];
    for (const kept of splits) {
      const left = all.filter((n) => !kept.includes(n));
      // A kept name with a newline keeps its same-shaped sibling too (wildcards.ts): none here has one.
      expect(await keptBy(s, source, dir, excludeFromDir(dir, kept, left)), `kept ${JSON.stringify(kept)}`).toEqual([...kept].sort());
    }
  });

  it('keeps what is under a kept directory and leaves the rest of the tree as it is', async () => {
    const lines = excludeFromDir(dir, ['plain'], all.filter((n) => n !== 'plain'));
    expect(await keptBy(s, source, join(dir, 'plain'), lines)).toEqual(['inside']);
    expect(await keptBy(s, source, 'top dir', lines)).toEqual(['we!rd (d)|*[x]']);
  });

  it('leaves out everything of a directory when nothing is kept, the root included', async () => {
    expect(await keptBy(s, source, dir, [allButExclude(dir, [])])).toEqual([]);
    expect(await keptBy(s, source, '', [allButExclude('', ['top dir'])])).toEqual(['top dir']);
  });

  it('a literal line leaves out one name, and no sibling that only looks like it', async () => {
    for (const name of ['*', '?', '[', 'st*r', 'q?r', 'br[1]', '!(neg)', 'x|y', '\\', ' lead', '#hash']) {
      expect(await keptBy(s, source, dir, [literalExclude(`${dir}/${name}`)]), name).toEqual(all.filter((n) => n !== name));
    }
  });

  it('a name with a newline is left out by naming what is kept, never by a pattern that could take a sibling', async () => {
    writeFileSync(join(source, dir, 'nlax'), 'the newline name\'s same-shaped sibling');
    try {
      const withSibling = [...all, 'nlax'].sort();
      const kept = withSibling.filter((n) => n !== 'nl\nx');
      const lines = excludeFromDir(dir, kept, ['nl\nx']);
      expect(lines).toHaveLength(1);
      expect(await keptBy(s, source, dir, lines)).toEqual(kept);
    } finally {
      rmSync(join(source, dir, 'nlax'));
    }
  });
});
