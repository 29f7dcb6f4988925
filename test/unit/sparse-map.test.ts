/**
 * The sparse record's map (src/save/sparse.ts, docs/state-format.md): read
 * back exactly whatever a path's bytes, and a dd block size the boot can
 * copy every extent with.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { copyBlockSize, formatMap, mapSparse, MAP_HEADER, parseMap, type MapLine } from '../../src/save/sparse.js';

const line = (over: Partial<MapLine>): MapLine => ({
  n: 0,
  size: 2 ** 40,
  mode: 0o640,
  uid: 1000,
  gid: 100,
  mtime: 1_700_000_000,
  dirMtime: 1_690_000_000,
  bs: 4096,
  extents: [{ offset: 0, length: 4096 }, { offset: 2 ** 39, length: 8192 }],
  rel: 'home/user/big.img',
  ...over,
});

describe('the sparse map', () => {
  it('reads back what it wrote, for names with spaces, newlines, quotes and bytes that are not UTF-8', () => {
    const lines = [
      line({}),
      line({ rel: "home/user/a name\nwith 'quotes' $(x) \\ and \xff", n: 1, extents: [] }),
      line({ rel: 'home/user/link', n: 1, extents: [] }),
    ];
    const data = formatMap(lines);
    expect(parseMap(data)).toEqual(lines);
    const text = data.toString('latin1');
    expect(text.split('\n')[0]).toBe(MAP_HEADER);
    // One line per path, the path one field: the boot reads it with `read`.
    expect(text.trimEnd().split('\n')).toHaveLength(4);
    expect(text).toMatch(/^1 .* - home\/user\/a\\0040name\\0012with\\0040\\0047quotes\\0047/m);
  });

  it('refuses a line with fields missing', () => {
    expect(() => parseMap(Buffer.from('0 1 644 0 0 0 0 4096 -\n'))).toThrow(/9 fields, not 10/);
  });
});

describe('copyBlockSize', () => {
  it('divides every offset and every length but the last, up to 1 MiB', () => {
    expect(copyBlockSize([])).toBe(1 << 20);
    expect(copyBlockSize([{ offset: 2 ** 40, length: 4 << 20 }])).toBe(1 << 20);
    expect(copyBlockSize([{ offset: 0, length: 12288 }, { offset: 2 ** 30, length: 123 }])).toBe(4096);
    expect(copyBlockSize([{ offset: 512, length: 4096 }])).toBe(512);
    expect(copyBlockSize([{ offset: 4096, length: 100 }, { offset: 8192, length: 1 }])).toBe(4);
  });
});

describe('finding a sparse file data', () => {
  it('answers "no file" at once for one swapped for a FIFO since the walk, and maps the others', async () => {
    const root = mkdtempSync(join(tmpdir(), 'cairn-sparse-map-'));
    const entry = { type: 'file', mode: 0o644, uid: 0, gid: 0, size: 0, allocated: 0, rdev: 0, ino: 0, nlink: 1, ctimeMs: 0, mtimeMs: 0 } as const;
    // Were the FIFO opened to be read, this writer would free it after 5 s, and the time below tells.
    const writer = spawn('sh', ['-c', 'sleep 5; exec 3>"$1"', 'sh', join(root, 'was-sparse.img')], { stdio: 'ignore' });
    try {
      execFileSync('mkfifo', [join(root, 'was-sparse.img')]);
      execFileSync('truncate', ['-s', '1G', join(root, 'sparse.img')]);
      const started = Date.now();
      const layouts = await mapSparse(root, [
        { rels: ['was-sparse.img'], entry },
        { rels: ['sparse.img'], entry },
      ]);
      expect(Date.now() - started).toBeLessThan(3000);
      expect(layouts).toEqual([undefined, { size: 2 ** 30, extents: [] }]);
    } finally {
      writer.kill();
      rmSync(root, { recursive: true, force: true });
    }
  }, 20_000);
});
