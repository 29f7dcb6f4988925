import { describe, expect, it } from 'vitest';
import { IntegrityError, VerifyMismatchError } from '../../src/lib/errors.js';
import { againWhileChanging } from '../../src/save/again.js';

const difference = (path: string, changedDuringSave: boolean) => ({ path, what: 'size', expected: '2', actual: '1', changedDuringSave });
const changing = new VerifyMismatchError('/data/upperfs.squashfs.tmp', [difference('/var/log/a', true), difference('/home/u/b', true)]);
const mixed = new VerifyMismatchError('/data/upperfs.squashfs.tmp', [difference('/var/log/a', true), difference('/etc/old', false)]);

/** Attempts that fail with the given errors in turn, then succeed. */
function attempts(...failures: Error[]) {
  let n = 0;
  const attempt = async () => {
    const e = failures[n++];
    if (e) throw e;
    return `saved on try ${n}`;
  };
  return { attempt, tries: () => n };
}

/** What the shutdown save does when files change while it runs (cairn save --retries). */
describe('saving again while files change', () => {
  it('tries again after a save whose every difference changed while it ran, and says so', async () => {
    const a = attempts(changing, changing);
    const said: number[] = [];
    expect(await againWhileChanging(a.attempt, 2, (e, next) => said.push(next))).toBe('saved on try 3');
    expect(said).toEqual([1, 2]);
  });

  it('gives up after the tries it was given, with the last failure', async () => {
    const a = attempts(changing, changing, changing);
    await expect(againWhileChanging(a.attempt, 2, () => {})).rejects.toBe(changing);
    expect(a.tries()).toBe(3);
    const none = attempts(changing);
    await expect(againWhileChanging(none.attempt, 0, () => {})).rejects.toBe(changing);
    expect(none.tries()).toBe(1);
  });

  it('never tries again when a difference is not a change made meanwhile, nor after any other failure', async () => {
    expect(mixed.live).toBe(false);
    const a = attempts(mixed);
    await expect(againWhileChanging(a.attempt, 2, () => {})).rejects.toBe(mixed);
    expect(a.tries()).toBe(1);
    const other = new IntegrityError('/data/upperfs.squashfs', 'it read back different');
    const b = attempts(other);
    await expect(againWhileChanging(b.attempt, 2, () => {})).rejects.toBe(other);
    expect(b.tries()).toBe(1);
  });
});

describe('what a failed verification tells the user to do', () => {
  it('to save or run the checkpoint again when every difference changed meanwhile, else that nothing was replaced', () => {
    expect(changing.hint).toBe('these files changed while the save ran; save again when they are quiet');
    expect(mixed.hint).toBe('the image does not hold what the upper layer holds; the saved states were not changed');
    const d = [difference('/var/log/a', true)];
    expect(new VerifyMismatchError('/data/delta.tmp', d, 'checkpoint').hint).toBe('these files changed while the checkpoint ran; run it again when they are quiet');
    expect(new VerifyMismatchError('/data/delta.tmp', [difference('/etc/old', false)], 'checkpoint').hint).toBe('the delta does not hold what changed; nothing was replaced');
    expect(new VerifyMismatchError('/data/delta.tmp', [], 'checkpoint').live).toBe(false);
  });
});
