import { execa } from 'execa';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { computeChainChanges } from '../../src/changes/changes.js';
import { ChainView } from '../../src/checkpoint/parent.js';
import type { XattrMap } from '../../src/save/xattrs.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * `cairn diff` since a checkpoint: the upper layer against the chain's
 * tree. The chain is one directory here (a mounted link at run time).
 */
describe('computeChainChanges', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-chain-changes-'));
  const parent = join(dir, 'parent');
  const upper = join(dir, 'upper');
  let since = 0;
  afterAll(() => rm(dir, { recursive: true, force: true }));

  beforeAll(async () => {
    await mkdir(join(parent, 'home/user'), { recursive: true });
    await writeFile(join(parent, 'home/user/same'), 'as in the checkpoint\n');
    await writeFile(join(parent, 'home/user/edited'), 'before\n');
    await writeFile(join(parent, 'home/user/swapped'), 'a file at the walk\n');
    await execa('find', [parent, '-exec', 'touch', '-h', '-d', '@1700000000', '{}', '+']);
    await execa('cp', ['-a', parent, upper]);
    await sleep(20);
    since = Date.now();
    await sleep(20);
    await writeFile(join(upper, 'home/user/edited'), 'after!\n');
    // Same bytes, written again: listed only if its contents differ.
    await writeFile(join(upper, 'home/user/swapped'), 'a file at the walk\n');
  });

  it('lists a file swapped for a FIFO after the walk as changed, without waiting for a writer', async () => {
    const fifo = join(upper, 'home/user/swapped');
    let writer: ReturnType<typeof spawn> | undefined;
    /** The chain, whose xattr read comes between the walk and the contents: the user swaps the file there. */
    class SwappingView extends ChainView {
      override async xattrsOf(rels: readonly string[]): Promise<XattrMap> {
        await rm(fifo);
        await execa('mkfifo', [fifo]);
        // Were the FIFO opened to be read, this writer would free it after
        // 5 s, and the time below tells; without it the test would hang.
        writer = spawn('sh', ['-c', 'sleep 5; exec 3>"$1"', 'sh', fifo], { stdio: 'ignore' });
        return super.xattrsOf(rels);
      }
    }
    const view = new SwappingView([{ root: parent, removed: new Set() }]);
    const started = Date.now();
    try {
      const set = await computeChainChanges({ upperRoot: upper, contentsSinceMs: since, parent: view });
      expect(Date.now() - started).toBeLessThan(3000);
      expect(set.changes.map((c) => `${c.kind} ${c.path} ${c.what.join(',')}`)).toEqual([
        'M home/user/edited modification time,contents',
        'M home/user/swapped modification time,contents',
      ]);
    } finally {
      view.close();
      writer?.kill();
    }
  }, 20_000);
});
