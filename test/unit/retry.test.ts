import { describe, it, expect } from 'vitest';
import { isTransient, retryTransient } from '../../src/lib/retry.js';
import { CommandFailedError, PathError } from '../../src/lib/errors.js';

const ebusy = () => Object.assign(new Error('EBUSY: resource busy or locked, rmdir /mnt/x'), { code: 'EBUSY' });
const umountBusy = () => new CommandFailedError('umount /mnt/x', 32, 'umount: /mnt/x: target is busy.');

/** A function that fails with `errors` in turn, then returns 'done'; counts its calls. */
function failing(errors: (() => unknown)[]) {
  const f = {
    calls: 0,
    fn: async () => {
      const e = errors[f.calls++];
      if (e) throw e();
      return 'done';
    },
  };
  return f;
}

describe('retryTransient', () => {
  it('retries an EBUSY error and then succeeds', async () => {
    const f = failing([ebusy, ebusy]);
    await expect(retryTransient('rmdir', f.fn, 2)).resolves.toBe('done');
    expect(f.calls).toBe(3);
  });

  it("retries a command whose stderr says 'target is busy' and then succeeds", async () => {
    const f = failing([umountBusy]);
    await expect(retryTransient('umount', f.fn, 2)).resolves.toBe('done');
    expect(f.calls).toBe(2);
  });

  it('gives up after the given retries and rethrows the busy error', async () => {
    const f = failing([ebusy, ebusy, ebusy, ebusy, ebusy]);
    const err = await retryTransient('rmdir', f.fn, 2).catch((e: unknown) => e);
    expect(f.calls).toBe(3);
    expect(err).toBeInstanceOf(Error);
    expect((err as NodeJS.ErrnoException).code).toBe('EBUSY');
  });

  it('gives up on a busy command after the given retries with the CommandFailedError', async () => {
    const f = failing([umountBusy, umountBusy, umountBusy, umountBusy]);
    const err = await retryTransient('umount', f.fn, 2).catch((e: unknown) => e);
    expect(f.calls).toBe(3);
    expect(err).toBeInstanceOf(CommandFailedError);
    expect((err as CommandFailedError).stderrTail).toContain('target is busy');
  });

  it('throws any other error at once, after one call, unchanged', async () => {
    for (const make of [
      () => Object.assign(new Error('ENOENT: no such file'), { code: 'ENOENT' }),
      () => new CommandFailedError('mount /dev/loop0 /mnt', 32, 'mount: wrong fs type, bad option, bad superblock'),
      () => new PathError('/mnt/x', 'is not a directory'),
      () => new TypeError('x is not a function'),
    ]) {
      const original = make();
      const f = failing([() => original]);
      const started = Date.now();
      const err = await retryTransient('op', f.fn, 2).catch((e: unknown) => e);
      expect(err).toBe(original);
      expect(f.calls).toBe(1);
      // No retry delay was waited for.
      expect(Date.now() - started).toBeLessThan(150);
    }
  });

  it('stops retrying as soon as the error is no longer transient', async () => {
    const permanent = new CommandFailedError('umount /mnt/x', 32, 'umount: /mnt/x: not mounted.');
    const f = failing([ebusy, () => permanent]);
    const err = await retryTransient('umount', f.fn, 2).catch((e: unknown) => e);
    expect(err).toBe(permanent);
    expect(f.calls).toBe(2);
  });

  it('returns the first result without retrying', async () => {
    const f = failing([]);
    await expect(retryTransient('op', f.fn, 2)).resolves.toBe('done');
    expect(f.calls).toBe(1);
  });
});

describe('isTransient', () => {
  it('is true for EBUSY and busy commands only', () => {
    expect(isTransient(ebusy())).toBe(true);
    expect(isTransient(umountBusy())).toBe(true);
    expect(isTransient(new CommandFailedError('losetup -d', 1, 'losetup: /dev/loop0: detach failed: Device or resource busy'))).toBe(
      true,
    );
    expect(isTransient(Object.assign(new Error('x'), { code: 'EPERM' }))).toBe(false);
    expect(isTransient(new CommandFailedError('umount /x', 32, 'umount: /x: not mounted.'))).toBe(false);
    expect(isTransient(new Error('device busy'))).toBe(false);
  });
});
