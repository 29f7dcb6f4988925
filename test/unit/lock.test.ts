import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { withWrapperLock } from '../../src/apk/lock.js';
import { withSaveLock } from '../../src/save/lock.js';

/**
 * The save lock and the apk wrapper's lock: one implementation
 * (src/lib/lock.ts), so the save lock's cases stand for both, and the apk
 * lock's cases check that it is the same mechanism under /run/cairn.
 */

const session = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
const FIVE_HOURS = 5 * 3600_000;

/** The pid of a process that has exited (and was reaped). */
async function deadPid(): Promise<number> {
  const child = spawn('true');
  await new Promise((r) => child.on('exit', r));
  return child.pid!;
}

/** A token's name as src/lib/lock.ts makes it: owner.<boot>.<pid>.<pid start>.<random>. */
const token = (o: { session: string; pid: number; start?: string }) =>
  `owner.${o.session.replace(/[^A-Za-z0-9-]/g, '_')}.${o.pid}.${o.start ?? '0'}.${randomBytes(8).toString('hex')}`;

/** The pid's start time as /proc/<pid>/stat gives it (field 22). */
const startOf = (pid: number) => {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
};

/** What a lock directory looks like to a user after a power cut or a crash: its files, its times. */
async function leftLock(lockPath: string, files: Record<string, string>, mtime: Date): Promise<void> {
  await mkdir(lockPath);
  for (const [name, text] of Object.entries(files)) {
    await writeFile(join(lockPath, name), text);
    await utimes(join(lockPath, name), mtime, mtime);
  }
  await utimes(lockPath, mtime, mtime);
}

const record = (o: { pid: number; session: string }) => JSON.stringify({ ...o, started: new Date(Date.now() + FIVE_HOURS).toISOString() });

/** The owner tokens in a lock directory. */
const owners = async (lockPath: string) => (await readdir(lockPath)).filter((n) => n.startsWith('owner.'));

describe('the save lock', () => {
  let data: string;
  let lock: string;
  beforeEach(async () => {
    data = await mkdtemp(join(tmpdir(), 'cairn-lock-'));
    lock = join(data, '.cairn-save.lock');
  });
  afterEach(() => rm(data, { recursive: true, force: true }));

  /** Takes the lock; says who the lock directory names as its owner while it is held. */
  const take = (waitSeconds: number, onWait?: (h: string) => void) =>
    withSaveLock(data, { waitSeconds, session, onWait }, async (held) => {
      const names = await owners(lock);
      const record = JSON.parse(await readFile(join(lock, names[0]!), 'utf8')) as { pid: number; session: string };
      return { names, record, intact: held.intact() };
    });
  const mine = expect.stringMatching(new RegExp(`^owner\\.${session}\\.${process.pid}\\.${startOf(process.pid)}\\.[0-9a-f]{16}$`));

  it.each([
    ['an empty token of an earlier boot (a power cut on a clock 5 hours ahead)', () => ({ [token({ session: 'an-earlier-boot', pid: process.pid })]: '' }), FIVE_HOURS],
    ['no token at all (a stick that lost its cache), mtime 5 hours ahead', () => ({}), FIVE_HOURS],
    ['only an empty owner record (an older layout), mtime 5 hours ahead', () => ({ owner: '' }), FIVE_HOURS],
    ['an unreadable token of an earlier boot, mtime 5 hours behind', () => ({ [token({ session: 'an-earlier-boot', pid: 1 })]: '{"pid": 12' }), -FIVE_HOURS],
    ['a token of an earlier boot whose pid runs now, mtime 5 hours ahead', () => ({ [token({ session: 'an-earlier-boot', pid: process.pid })]: record({ pid: process.pid, session: 'x' }) }), FIVE_HOURS],
  ])('a lock left with %s is taken over at once', async (_, files, offset) => {
    await leftLock(lock, files(), new Date(Date.now() + offset));
    // A wait allowed, so a lock judged live would show as seconds, not as an error.
    const started = performance.now();
    const r = await take(10);
    expect(performance.now() - started).toBeLessThan(2000);
    expect(r.names).toEqual([mine]);
    expect(r.record).toMatchObject({ pid: process.pid, session });
    expect(r.intact).toBe(true);
    expect(await readdir(data)).toEqual([]);
  });

  it('a lock of a process of this boot that is gone is taken over at once', async () => {
    await leftLock(lock, { [token({ session, pid: await deadPid() })]: '' }, new Date(Date.now() + FIVE_HOURS));
    expect((await take(0)).names).toEqual([mine]);
  });

  it('a lock whose pid now belongs to a process started later is taken over at once', async () => {
    await leftLock(lock, { [token({ session, pid: process.pid, start: '1' })]: '' }, new Date());
    expect((await take(0)).names).toEqual([mine]);
  });

  it('a live save of this boot keeps its lock: another fails at once with --wait 0, or waits and then fails', async () => {
    let release!: () => void;
    const holding = withSaveLock(data, { waitSeconds: 0, session }, () => new Promise<void>((r) => (release = r)));
    while (!release) await new Promise((r) => setTimeout(r, 10));
    try {
      await expect(take(0)).rejects.toMatchObject({ code: 'LOCKED', exitCode: 75, message: expect.stringMatching(/another save is running \(pid \d+/) });
      const waited: string[] = [];
      const started = performance.now();
      await expect(take(1, (h) => waited.push(h))).rejects.toMatchObject({ code: 'LOCKED' });
      expect(performance.now() - started).toBeGreaterThanOrEqual(900);
      expect(waited).toEqual([expect.stringMatching(new RegExp(`^pid ${process.pid}, since `))]);
    } finally {
      release();
      await holding;
    }
    expect(await readdir(data)).toEqual([]);
  });

  it('a live process of this boot keeps its lock whatever the mtime says, and a waiting save leaves nothing in it', async () => {
    const child = spawn('sleep', ['30']);
    try {
      const held = token({ session, pid: child.pid!, start: startOf(child.pid!) });
      await leftLock(lock, { [held]: record({ pid: child.pid!, session }) }, new Date(Date.now() - FIVE_HOURS));
      const mtimes = async () => [(await stat(data, { bigint: true })).mtimeNs, (await stat(lock, { bigint: true })).mtimeNs];
      const before = await mtimes();
      await expect(take(1)).rejects.toMatchObject({ code: 'LOCKED', message: expect.stringContaining(`pid ${child.pid}, since `) });
      expect(await readdir(lock)).toEqual([held]);
      // Waiting wrote nothing on the stick: no directory beside the lock, no token in it, made or removed.
      expect(await mtimes()).toEqual(before);
    } finally {
      child.kill();
    }
  });

  it('a waiting save gets the lock as soon as the holder releases it', async () => {
    let release!: () => void;
    const holding = withSaveLock(data, { waitSeconds: 0, session }, () => new Promise<void>((r) => (release = r)));
    while (!release) await new Promise((r) => setTimeout(r, 10));
    const waiting = take(30);
    setTimeout(() => release(), 500);
    expect((await waiting).names).toEqual([mine]);
    await holding;
  });

  it('saves racing for a dead lock hold it one at a time', async () => {
    await leftLock(lock, { [token({ pid: 1, session: 'an-earlier-boot' })]: '' }, new Date(Date.now() + FIVE_HOURS));
    let inside = 0;
    let most = 0;
    await Promise.all(
      Array.from({ length: 6 }, () =>
        withSaveLock(data, { waitSeconds: 30, session }, async () => {
          most = Math.max(most, ++inside);
          await new Promise((r) => setTimeout(r, 20));
          inside--;
        }),
      ),
    );
    expect(most).toBe(1);
    expect(await readdir(data)).toEqual([]);
  });

  it('two saves that meet taking over a dead lock with --wait 0: one of them gets it, every time', async () => {
    for (let round = 0; round < 30; round++) {
      await leftLock(lock, { [token({ pid: 1, session: 'an-earlier-boot' })]: '' }, new Date(Date.now() + FIVE_HOURS));
      const results = await Promise.allSettled([0, 1].map(() => withSaveLock(data, { waitSeconds: 0, session }, async () => 'saved')));
      expect(results.filter((r) => r.status === 'fulfilled'), `round ${round}`).not.toHaveLength(0);
      for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'LOCKED' });
      expect(await readdir(data)).toEqual([]);
    }
  });

  it('a holder whose lock was taken over sees it, and its release leaves the newer lock alone', async () => {
    const newer = token({ session, pid: process.pid });
    const after = await withSaveLock(data, { waitSeconds: 0, session }, async (held) => {
      const before = held.intact();
      // Another process judged this one gone and put its own lock in place.
      await rm(lock, { recursive: true });
      await leftLock(lock, { [newer]: '' }, new Date());
      return [before, held.intact()];
    });
    expect(after).toEqual([true, false]);
    expect(await readdir(lock)).toEqual([newer]);
  });

  it('removes what an interrupted lock left beside it, and what an older cairn left', async () => {
    await mkdir(join(data, `.cairn-save.lock.an-earlier-boot.4242.0.0123456789abcdef`));
    await mkdir(join(data, `.cairn-save.lock.${session}.${await deadPid()}.0.0123456789abcdef`));
    await writeFile(join(data, '.cairn-save.owner'), '');
    await take(0);
    expect(await readdir(data)).toEqual([]);
  });

  it.each([
    ['a symbolic link to a directory', /\.cairn-save\.lock is a symbolic link where cairn's lock expects a directory/, async (target: string) => symlink(target, lock)],
    ['a symbolic link to nowhere', /\.cairn-save\.lock is a symbolic link where/, async () => symlink('/nonexistent/cairn-lock', lock)],
    ['a file', /\.cairn-save\.lock is a file where cairn's lock expects a directory/, async () => writeFile(lock, 'not a lock')],
    ['a directory whose owner record is a symbolic link', /\.cairn-save\.lock\/owner is a symbolic link where cairn's lock expects a file/, async (target: string) => {
      await mkdir(lock);
      await symlink(join(target, 'precious'), join(lock, 'owner'));
    }],
    ['a directory whose owner token is a symbolic link', /\.cairn-save\.lock\/owner\.an-earlier-boot\.1\.0\.[0-9a-f]{16} is a symbolic link where cairn's lock expects a file/, async (target: string) => {
      await mkdir(lock);
      await symlink(join(target, 'precious'), join(lock, token({ session: 'an-earlier-boot', pid: 1 })));
    }],
  ])('a lock path that is %s: a clear error, and nothing followed or removed', async (_, message, make) => {
    const target = await mkdtemp(join(tmpdir(), 'cairn-lock-target-'));
    try {
      await writeFile(join(target, 'precious'), 'keep me');
      await make(target);
      const before = await lstat(lock);
      const error = await take(5).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toMatchObject({ name: 'LockPathError', code: 'LOCK_PATH', exitCode: 73, message: expect.stringMatching(message) });
      expect((await lstat(lock)).ino).toBe(before.ino);
      expect(await readFile(join(target, 'precious'), 'utf8')).toBe('keep me');
      expect(await readdir(target)).toEqual(['precious']);
    } finally {
      await rm(target, { recursive: true, force: true });
    }
  });
});

describe('the apk wrapper lock (the same lock under <root>/run/cairn)', () => {
  let root: string;
  let runDir: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'cairn-apklock-'));
    runDir = join(root, 'run/cairn');
  });
  afterEach(() => rm(root, { recursive: true, force: true }));

  it('takes over the lock of a wrapper that is gone at once, and leaves nothing behind', async () => {
    await mkdir(runDir, { recursive: true });
    await leftLock(join(runDir, 'apk.lock'), { [token({ session, pid: await deadPid() })]: '' }, new Date(Date.now() + FIVE_HOURS));
    const names = await withWrapperLock(runDir, { waitSeconds: 0 }, () => owners(join(runDir, 'apk.lock')));
    expect(names).toEqual([expect.stringMatching(new RegExp(`^owner\\.${session}\\.${process.pid}\\.`))]);
    expect(await readdir(runDir)).toEqual([]);
  });

  it('a live wrapper keeps it: another fails with its own error', async () => {
    let release!: () => void;
    const holding = withWrapperLock(runDir, { waitSeconds: 0 }, () => new Promise<void>((r) => (release = r)));
    while (!release) await new Promise((r) => setTimeout(r, 10));
    try {
      await expect(withWrapperLock(runDir, { waitSeconds: 0 }, async () => 0)).rejects.toMatchObject({
        code: 'APK_WRAPPER_LOCKED',
        exitCode: 75,
        message: expect.stringMatching(/another cairn apk is running \(pid \d+/),
      });
    } finally {
      release();
      await holding;
    }
  });

  it('a symbolic link where its lock goes is an error, not followed', async () => {
    await mkdir(runDir, { recursive: true });
    await symlink(root, join(runDir, 'apk.lock'));
    await expect(withWrapperLock(runDir, { waitSeconds: 0 }, async () => 0)).rejects.toMatchObject({ code: 'LOCK_PATH', exitCode: 73 });
    expect((await lstat(join(runDir, 'apk.lock'))).isSymbolicLink()).toBe(true);
  });
});
