import { execa } from 'execa';
import { mkdtempSync } from 'node:fs';
import { link, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { longestSavedPath, walkTree } from '../../src/save/tree.js';

/** walkTree for a save: what no state can hold is left out, with why. */
describe('walkTree for a save', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-tree-'));
  afterAll(() => execa('rm', ['-rf', dir]));

  describe('sparse files', () => {
    const root = join(dir, 'sparse');
    beforeAll(async () => {
      await execa('mkdir', [root]);
      // 80 GiB of holes where 32 GiB are read at most.
      for (const [name, size] of [['a.img', '40G'], ['b.img', '20G'], ['c.img', '20G'], ['small.img', '1G']] as const) {
        await execa('truncate', ['-s', size, join(root, name)]);
      }
      await link(join(root, 'a.img'), join(root, 'a-link.img'));
      await writeFile(join(root, 'plain'), 'data');
    });

    it('keeps the largest holes out of the squash until the rest fit, hard links with them', () => {
      const walk = walkTree(root, undefined, { forSave: true });
      expect(walk.packed.map((p) => p.rels.sort())).toEqual([['a-link.img', 'a.img'], ['b.img']]);
      expect(walk.leftOut).toEqual([]);
      expect([...walk.entries.keys()].sort()).toEqual(['', 'c.img', 'plain', 'small.img']);
    });

    it('without perl to find their data, leaves them out and says why', () => {
      const path = process.env.PATH;
      process.env.PATH = '/nonexistent';
      try {
        const walk = walkTree(root, undefined, { forSave: true });
        expect(walk.packed).toEqual([]);
        expect(walk.leftOut.map((l) => l.rel).sort()).toEqual(['a-link.img', 'a.img', 'b.img']);
        expect([...walk.entries.keys()].sort()).toEqual(['', 'c.img', 'plain', 'small.img']);
        expect(walk.leftOut.find((l) => l.rel === 'a.img')?.reason).toMatch(
          /^a sparse file of 40\.0 GiB holding 0 B of data: squashing reads its 40\.0 GiB of holes.*perl, which finds its data without reading them, is missing \(apk add perl\)/,
        );
      } finally {
        process.env.PATH = path;
      }
    });

    it('leaves nothing out when not walking for a save', () => {
      const walk = walkTree(root);
      expect(walk.leftOut).toEqual([]);
      expect(walk.packed).toEqual([]);
      expect(walk.entries.size).toBe(7);
    });
  });

  describe('paths longer than PATH_MAX', () => {
    const root = join(dir, 'deep');
    const level = 'd'.repeat(255);
    beforeAll(async () => {
      await execa('mkdir', [root]);
      // cd one level at a time: no single call may take the whole path.
      await execa('sh', ['-c', `cd "$1" && for i in $(seq 20); do mkdir ${level} && cd -P ${level} || exit 1; done && echo deep > file`, 'sh', root]);
    });

    it('walks all of it when not for a save, reaching entries past PATH_MAX', () => {
      const walk = walkTree(root);
      const deepest = `${Array(20).fill(level).join('/')}/file`;
      expect(walk.entries.get(deepest)?.size).toBe(5);
      expect(walk.entries.size).toBe(22);
    });

    it('for a save, leaves out the first entry too long to unpack, with all it holds', () => {
      const walk = walkTree(root, undefined, { forSave: true });
      const longest = longestSavedPath(root);
      expect(walk.leftOut).toHaveLength(1);
      const { rel, reason } = walk.leftOut[0]!;
      expect(rel.length).toBeGreaterThan(longest);
      expect(rel.length - 256).toBeLessThanOrEqual(longest);
      expect(reason).toBe(`its path is ${rel.length} bytes long, more than the ${longest} a saved state can hold (PATH_MAX)`);
      expect([...walk.entries.keys()].every((k) => k.length <= longest)).toBe(true);
    });
  });
});
