import { describe, expect, it } from 'vitest';
import { withEach } from '../../src/lib/resources.js';

/** A with-function over named resources that records what it does, each acquisition taking MS. */
function tracked(ms: number, failing: string[] = []) {
  const events: string[] = [];
  let open = 0;
  let most = 0;
  const use = async (name: string, body: (r: string) => Promise<void>) => {
    open++;
    most = Math.max(most, open);
    await new Promise((r) => setTimeout(r, ms));
    open--;
    if (failing.includes(name)) throw new Error(`${name} cannot be had`);
    events.push(`got ${name}`);
    try {
      await body(`${name}!`);
    } finally {
      events.push(`gave back ${name}`);
    }
  };
  return { use, events, most: () => most };
}

describe('withEach: resources acquired side by side, all given back', () => {
  it('gives FN every resource in the order of the items, acquired at once, and gives them all back after', async () => {
    const t = tracked(30);
    const got = await withEach(['a', 'b', 'c'], t.use, async (rs) => {
      expect(t.events.filter((e) => e.startsWith('gave back'))).toEqual([]);
      return rs;
    });
    expect(got).toEqual(['a!', 'b!', 'c!']);
    expect(t.most()).toBe(3);
    expect(t.events.filter((e) => e.startsWith('gave back')).sort()).toEqual(['gave back a', 'gave back b', 'gave back c']);
  });

  it('gives them all back when FN throws, and throws its error', async () => {
    const t = tracked(5);
    await expect(withEach(['a', 'b'], t.use, async () => Promise.reject(new Error('fn failed')))).rejects.toThrow('fn failed');
    expect(t.events.filter((e) => e.startsWith('gave back')).sort()).toEqual(['gave back a', 'gave back b']);
  });

  it('when one cannot be had: FN never runs, the others are given back, and that error is thrown', async () => {
    const t = tracked(5, ['b']);
    let ran = false;
    await expect(
      withEach(['a', 'b', 'c'], t.use, async () => {
        ran = true;
      }),
    ).rejects.toThrow('b cannot be had');
    expect(ran).toBe(false);
    expect(t.events.sort()).toEqual(['gave back a', 'gave back c', 'got a', 'got c']);
  });

  it('runs FN with nothing when there are no items', async () => {
    expect(await withEach([], tracked(1).use, async (rs) => rs.length)).toBe(0);
  });
});
