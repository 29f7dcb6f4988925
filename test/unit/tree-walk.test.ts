import { execa } from 'execa';
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { longestSavedPath, walkTree } from '../../src/save/tree.js';

const latin1 = (bytes: number[]): string => Buffer.from(bytes).toString('latin1');

/**
 * The order and the names of a walk: depth first, each directory's names
 * sorted bytewise (the order mksquashfs lays files out in, which the
 * verification reads in), every name kept byte for byte.
 */
describe('walkTree order and names', () => {
  // A root whose own name is not ASCII: its paths cannot be given to the
  // kernel as they are spelled in the walk's latin1 form.
  const dir = mkdtempSync(join(tmpdir(), 'cairn-walk-é-'));
  afterAll(() => execa('rm', ['-rf', dir]));

  it('visits a directory before what it holds and names in byte order, "a/b" before "a-c"', () => {
    const root = join(dir, 'order');
    for (const d of ['a', 'a/b', 'z']) mkdirSync(join(root, d), { recursive: true });
    for (const f of ['a-c', 'a.b', 'a/b/f', 'a/.hidden', 'B', 'z/1']) writeFileSync(join(root, f), f);
    expect([...walkTree(root).entries.keys()]).toEqual(['', 'B', 'a', 'a/.hidden', 'a/b', 'a/b/f', 'a-c', 'a.b', 'z', 'z/1']);
  });

  it('keeps names and symlink targets that are not UTF-8 byte for byte, under a root that is not ASCII', () => {
    const root = Buffer.from(join(dir, 'bytes'));
    const at = (...parts: (string | number[])[]) =>
      Buffer.concat([root, ...parts.map((p) => Buffer.concat([Buffer.from('/'), typeof p === 'string' ? Buffer.from(p) : Buffer.from(p)]))]);
    mkdirSync(root);
    mkdirSync(at([0xe9, 0x74, 0xe9]));
    writeFileSync(at([0xe9, 0x74, 0xe9], [0xff, 0x0a, 0x41]), 'latin1');
    writeFileSync(at('ascii'), 'plain');
    writeFileSync(at('ünïcode'), 'utf8');
    symlinkSync(Buffer.from([0x2e, 0x2e, 0x2f, 0xfe, 0x0a]), at('link'));
    const walk = walkTree(root.toString());
    const summer = latin1([0xe9, 0x74, 0xe9]);
    expect([...walk.entries.keys()]).toEqual(['', 'ascii', 'link', latin1([...Buffer.from('ünïcode')]), summer, `${summer}/${latin1([0xff, 0x0a, 0x41])}`]);
    expect(walk.entries.get(`${summer}/${latin1([0xff, 0x0a, 0x41])}`)).toMatchObject({ type: 'file', size: 6 });
    expect(walk.entries.get('link')).toMatchObject({ type: 'symlink', target: latin1([0x2e, 0x2e, 0x2f, 0xfe, 0x0a]) });
  });

  describe('entries too long to save, told in the walk order', () => {
    const root = join(dir, 'long');
    let parent = '';
    beforeAll(async () => {
      // A directory whose path leaves room for "a" but not for a long name
      // beside it: "b..." is too long when the directory is read, a name
      // below "a" only one level down. The walk meets a's first.
      const longest = longestSavedPath(root);
      const parts: string[] = [];
      for (let left = longest - 100; left > 0; ) {
        const n = Math.min(200, left - 1);
        parts.push('d'.repeat(Math.max(1, n)));
        left -= Math.max(1, n) + 1;
      }
      parent = parts.join('/');
      mkdirSync(root);
      await execa('sh', ['-c', `cd "$1" && for p in ${parts.join(' ')}; do mkdir $p && cd -P $p || exit 1; done && mkdir a && : > a/${'x'.repeat(200)} && : > ${'b'.repeat(200)}`, 'sh', root]);
    });

    it('lists a/x... before b..., as a walk meets them', () => {
      const walk = walkTree(root, undefined, { forSave: true });
      expect(walk.leftOut.map((l) => l.rel)).toEqual([`${parent}/a/${'x'.repeat(200)}`, `${parent}/${'b'.repeat(200)}`]);
      expect(walk.entries.has(`${parent}/a`)).toBe(true);
    });
  });
});
