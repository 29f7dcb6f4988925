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
import { compileExcludes, patternLines } from '../../src/save/exclude.js';
import { allButExclude, canExclude, EXCLUDE_LINE_MAX, excludeFromDir, literalExclude } from '../../src/save/wildcards.js';
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
      const { lines, notLeftOut } = excludeFromDir(dir, kept, left);
      expect(notLeftOut).toEqual([]);
      expect(await keptBy(s, source, dir, lines), `kept ${JSON.stringify(kept)}`).toEqual([...kept].sort());
    }
  });

  it('keeps what is under a kept directory and leaves the rest of the tree as it is', async () => {
    const { lines } = excludeFromDir(dir, ['plain'], all.filter((n) => n !== 'plain'));
    expect(await keptBy(s, source, join(dir, 'plain'), lines)).toEqual(['inside']);
    expect(await keptBy(s, source, 'top dir', lines)).toEqual(['we!rd (d)|*[x]']);
  });

  it('leaves out everything of a directory when nothing is kept, the root included', async () => {
    expect(await keptBy(s, source, dir, [allButExclude(dir, [])!])).toEqual([]);
    expect(await keptBy(s, source, '', [allButExclude('', ['top dir'])!])).toEqual(['top dir']);
  });

  it('a literal line leaves out one name, and no sibling that only looks like it', async () => {
    for (const name of ['*', '?', '[', 'st*r', 'q?r', 'br[1]', '!(neg)', 'x|y', '\\', ' lead', '#hash']) {
      expect(await keptBy(s, source, dir, [literalExclude(`${dir}/${name}`)!]), name).toEqual(all.filter((n) => n !== name));
    }
  });

  it('a newline in a name or a directory is matched exactly: a same-shaped sibling is never taken for it', async () => {
    // Siblings that differ from the newline names only where the newline is.
    writeFileSync(join(source, dir, 'nlax'), 'the newline name\'s same-shaped sibling');
    mkdirSync(asBytes(join(source, dir, 'sub\ndir')));
    mkdirSync(join(source, dir, 'subxdir'));
    for (const d of ['sub\ndir', 'subxdir']) for (const f of ['kept', 'left', 'n\nl', 'nxl']) writeFileSync(asBytes(join(source, dir, d, f)), f);
    try {
      const withSibling = [...all, 'nlax', 'sub\ndir', 'subxdir'].sort();
      // Each way round, in both forms of line.
      for (const name of ['nl\nx', 'nlax']) {
        const kept = withSibling.filter((n) => n !== name);
        expect(await keptBy(s, source, dir, [literalExclude(`${dir}/${name}`)!]), JSON.stringify(name)).toEqual(kept);
        expect(await keptBy(s, source, dir, [allButExclude(dir, kept)!]), JSON.stringify(name)).toEqual(kept);
        expect(await keptBy(s, source, dir, [allButExclude(dir, [name])!]), JSON.stringify(name)).toEqual([name]);
      }
      // In a directory whose own name holds a newline, its look-alike untouched.
      for (const [d, other] of [['sub\ndir', 'subxdir'], ['subxdir', 'sub\ndir']] as const) {
        const lines = [allButExclude(`${dir}/${d}`, ['kept', 'n\nl'])!, literalExclude(`${dir}/${d}/nxl`)!];
        expect(await keptBy(s, source, `${dir}/${d}`, lines), JSON.stringify(d)).toEqual(['kept', 'n\nl']);
        expect(await keptBy(s, source, `${dir}/${other}`, lines), JSON.stringify(other)).toEqual(['kept', 'left', 'n\nl', 'nxl']);
      }
    } finally {
      for (const p of ['nlax', 'sub\ndir', 'subxdir']) rmSync(asBytes(join(source, dir, p)), { recursive: true });
    }
  });

  it('a directory of thousands of names, half of them kept: lines mksquashfs reads, leaving out exactly the rest', async () => {
    // One line naming 900 kept names would be 40 000 bytes: mksquashfs
    // gives up on an exclude file with a line over 16 383 bytes.
    const big = s.path('big');
    const names = Array.from({ length: 1900 }, (_, i) => `a-file-of-a-fairly-long-name.${String(i).padStart(5, '0')}`);
    mkdirSync(join(big, 'd'), { recursive: true });
    for (const n of names) writeFileSync(join(big, 'd', n), n);
    const kept = names.filter((_, i) => i % 2 === 0).slice(0, 900);
    const left = names.filter((n) => !kept.includes(n));
    const { lines, notLeftOut } = excludeFromDir('d', kept, left);
    expect(notLeftOut).toEqual([]);
    for (const l of lines) expect(l.length - 1).toBeLessThanOrEqual(EXCLUDE_LINE_MAX);
    expect(await keptBy(s, big, 'd', lines)).toEqual([...kept].sort());
  });

  it('no line longer than mksquashfs reads: a path too long to name is said, not written', () => {
    const deep = Array.from({ length: 8 }, () => '\n'.repeat(250)).join('/');
    expect(canExclude(deep)).toBe(false);
    expect(literalExclude(deep)).toBeUndefined();
    expect(allButExclude(deep, ['a'])).toBeUndefined();
    expect(excludeFromDir(deep, ['a', 'b'], ['c'])).toEqual({ lines: [], notLeftOut: [`${deep}/c`] });
    // Just within: the longest path of plain names fits.
    const plain = Array.from({ length: 16 }, () => 'p'.repeat(255)).join('/');
    expect(canExclude(plain)).toBe(true);
    expect(literalExclude(plain)!.length - 1).toBeLessThanOrEqual(EXCLUDE_LINE_MAX);
  });

  it("the save's patterns, as a user may write them in cairn.conf, are read by mksquashfs as the matcher reads them", async () => {
    const tree = s.path('patterns');
    for (const d of ['abs', 'dir/x', 'trail', 'keep']) mkdirSync(join(tree, d), { recursive: true });
    for (const f of ['#secret', '  lead', 'lead', 'abs/a', 'dir/x/y', 'trail/t', 'keep/k']) writeFileSync(join(tree, f), f);
    // A leading / (which mksquashfs refuses outright), a leading # (a comment
    // to it), leading spaces (dropped by it), doubled and trailing slashes.
    const patterns = ['/abs/*', '#secret', '  lead', 'dir//x', 'trail/'];
    const matcher = compileExcludes(patterns);
    const kept = (await keptByAll(s, tree, patternLines(patterns))).filter((rel) => rel !== '');
    const expected = ['abs', 'dir', 'keep', 'keep/k', 'lead'];
    expect(kept).toEqual(expected);
    for (const rel of ['abs/a', '#secret', '  lead', 'dir/x', 'trail']) expect(matcher(rel), rel).toBe(true);
    for (const rel of expected) expect(matcher(rel), rel).toBe(false);
  });
});

/** Every path mksquashfs kept of SOURCE, given the exclude LINES. */
async function keptByAll(s: Scratch, source: string, lines: Buffer[]): Promise<string[]> {
  const exclude = s.path('exclude');
  const image = s.path('image.sqfs');
  writeFileSync(exclude, Buffer.concat(lines));
  await execa('mksquashfs', [source, image, '-noappend', '-quiet', '-no-progress', '-comp', 'gzip', '-wildcards', '-ef', exclude]);
  const { stdout } = await execa('unsquashfs', ['-lls', '-d', '', image]);
  return stdout.split('\n').filter((l) => l.startsWith('d') || l.startsWith('-')).map((l) => l.replace(/^.*? \d\d:\d\d /, '').replace(/^\//, '')).sort();
}
