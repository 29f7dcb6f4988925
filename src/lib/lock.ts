import { randomBytes } from 'node:crypto';
import { closeSync, constants, lstatSync, openSync, readFileSync, type Stats } from 'node:fs';
import { lstat, mkdir, open, readdir, rename, rm, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fsyncDir } from './durable.js';
import { LockPathError } from './errors.js';
import { log } from './log.js';

/**
 * cairn's one lock (the save lock on the data partition, the apk wrapper's
 * under /run/cairn), made so that no crash, power cut or wrong clock leaves a
 * lock nobody can take, and so that a live holder's lock is never removed.
 *
 * The lock is a directory. Who holds it is said by the token files in it,
 * `owner.<boot>.<pid>.<start>.<random>`: the kernel's boot id, the pid and
 * its start time (ticks since boot), so the NAME tells whether its process
 * still runs, whatever the file holds (its JSON is for people) and whatever
 * the clocks say. A token is live while its boot is this one and its pid
 * runs and started when the token says. Time stamps are never read: a lock
 * left by a machine whose clock ran hours ahead or behind neither blocks nor
 * expires early.
 *
 * A process holds the lock when the directory at the lock's name holds its
 * token and no other live one. To take it:
 * - no directory there: make one beside it holding the token (file and
 *   directory fsynced) and rename it to the lock's name. rename(2) is atomic,
 *   fails onto a directory with anything in it, and replaces an empty one (an
 *   older cairn's lock, a stick that lost its cache in a power cut).
 * - a directory there: list it; a live token there means wait (a wait only
 *   reads). Otherwise add the token and list again. Alone among the live
 *   tokens: the lock is this process's, and the dead tokens are removed.
 *   Otherwise the token is withdrawn and the process waits. Two processes
 *   adding at once cannot both find themselves alone, since each lists after
 *   its own add.
 * Only its holder removes the directory (renamed aside, then removed), so a
 * newer lock is never removed for an old owner, and no lock is ever moved
 * while it is live.
 *
 * Anything but a directory at the lock's name, or anything but a plain file
 * under a token's name, is not cairn's: a LockPathError, nothing followed or
 * removed. Other files in the directory (an older cairn's record) count for
 * nothing and go with it.
 */

const TOKEN = 'owner';
const POLL_MS = 250;
/**
 * Two processes that met adding their tokens both withdraw; neither holds
 * the lock, so they try again at once (after a random pause of a few
 * milliseconds) for this long past the wait, even a wait of 0.
 */
const CONTENTION_MS = 2000;

export interface LockOptions {
  /** Seconds to wait for a live holder; 0 fails at once. */
  waitSeconds: number;
  /** The kernel's boot id (/proc/sys/kernel/random/boot_id): a token of another boot is dead. */
  session: string;
  /** Called once, with the holder, when the lock is busy and the wait begins. */
  onWait?: (holder: string) => void;
  /** The error thrown when the wait is over and the holder still lives. */
  busy: (holder: string) => Error;
  /** What the lock guards, for log lines. */
  what: string;
}

export interface HeldLock {
  /** False once this process's token is gone from the lock: stop before touching what it guards. */
  readonly intact: () => boolean;
}

/** Who made a token or a private directory, read from its name. */
interface Maker {
  name: string;
  session: string;
  pid: number;
  /** The pid's start time in ticks since boot; '0' when it could not be read. */
  start: string;
}

export async function withLock<T>(lockPath: string, options: LockOptions, fn: (lock: HeldLock) => Promise<T>): Promise<T> {
  const token = `${TOKEN}.${makerId(options.session)}`;
  await acquire(lockPath, token, options);
  try {
    return await fn({ intact: () => lstatSync(join(lockPath, token), { throwIfNoEntry: false })?.isFile() === true });
  } finally {
    await release(lockPath, token, options.session).catch((e: Error) => log.error({ lockPath, error: e.message }, `releasing the ${options.what} lock`));
  }
}

async function acquire(lockPath: string, token: string, o: LockOptions): Promise<void> {
  const deadline = performance.now() + o.waitSeconds * 1000;
  let announced = false;
  for (;;) {
    // Placing writes (and fsyncs): only where no lock is, so that a wait only reads.
    const there = await lstat(lockPath).catch(ignore('ENOENT'));
    const outcome = there ? await enter(lockPath, token, o) : (await place(lockPath, token, o.session)) ? 'held' : 'gone';
    if (outcome === 'held') break;
    if (outcome === 'gone') continue; // made or released between two looks: look again
    if (outcome.withdrawn && performance.now() < deadline + CONTENTION_MS) {
      await new Promise((r) => setTimeout(r, 2 + Math.random() * 30));
      continue;
    }
    if (performance.now() >= deadline) throw o.busy(outcome.holder);
    if (!announced) o.onWait?.(outcome.holder);
    announced = true;
    // Jittered, so that processes that withdrew together do not meet again.
    const pause = POLL_MS * (0.5 + Math.random());
    await new Promise((r) => setTimeout(r, Math.min(pause, Math.max(0, deadline - performance.now()) + 1)));
  }
  await removeLeftovers(lockPath, o.session);
}

/** Makes the lock, holding only `token`, where there is none; false when a lock is there. */
async function place(lockPath: string, token: string, session: string): Promise<boolean> {
  const pending = `${lockPath}.${makerId(session)}`;
  await mkdir(pending, { mode: 0o700 });
  try {
    await writeToken(join(pending, token), session);
    await fsyncDir(pending);
    await rename(pending, lockPath);
    return true;
  } catch (e) {
    await rm(pending, { recursive: true, force: true });
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') return false;
    if (code === 'ENOTDIR' || code === 'EISDIR') {
      // Only what is at the lock's name can make the rename fail so: say what it is.
      const st = await lstat(lockPath).catch(() => undefined);
      if (st) throw notOurs(lockPath, st, 'a directory');
    }
    throw e;
  }
}

/**
 * Joins the lock there: looks first (a wait only reads), then adds `token`
 * and keeps it if no other live token is there once it is in.
 */
async function enter(lockPath: string, token: string, o: LockOptions): Promise<'held' | 'gone' | { holder: string; withdrawn?: true }> {
  const before = await tokens(lockPath);
  if (!before) return 'gone';
  const live = before.find((m) => whyGone(m, o.session) === undefined);
  if (live) return { holder: describe(join(lockPath, live.name), live) };
  const mine = join(lockPath, token);
  try {
    await writeToken(mine, o.session);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'gone';
    throw e;
  }
  const withdraw = () => unlink(mine).catch(ignore('ENOENT'));
  try {
    const after = await tokens(lockPath);
    // Not there: the lock was released meanwhile and this token went with it.
    if (!after?.some((m) => m.name === token)) return 'gone';
    const others = after.filter((m) => m.name !== token);
    const rival = others.find((m) => whyGone(m, o.session) === undefined);
    if (rival) {
      await withdraw();
      return { holder: describe(join(lockPath, rival.name), rival), withdrawn: true };
    }
    for (const dead of others) {
      log.warn({ lockPath, token: dead.name }, `taking over the ${o.what} lock: its owner ${whyGone(dead, o.session)}`);
      await unlink(join(lockPath, dead.name)).catch(ignore('ENOENT'));
    }
    return 'held';
  } catch (e) {
    await withdraw();
    throw e;
  }
}

/** The tokens in the lock directory, or undefined when there is none. */
async function tokens(lockPath: string): Promise<Maker[] | undefined> {
  const st = await lstat(lockPath).catch(ignore('ENOENT'));
  if (!st) return undefined;
  if (!st.isDirectory()) throw notOurs(lockPath, st, 'a directory');
  const names = await readdir(lockPath).catch(ignore('ENOENT', 'ENOTDIR'));
  if (!names) return undefined;
  const found: Maker[] = [];
  for (const name of names.filter((n) => n === TOKEN || n.startsWith(`${TOKEN}.`))) {
    const path = join(lockPath, name);
    const tst = await lstat(path).catch(ignore('ENOENT'));
    if (!tst) continue;
    if (!tst.isFile()) throw notOurs(path, tst, 'a file');
    const maker = parseMaker(name.slice(TOKEN.length + 1), name);
    if (maker) found.push(maker);
  }
  return found;
}

/** Removes the lock if this process holds it; only a holder ever removes one. */
async function release(lockPath: string, token: string, session: string): Promise<void> {
  if (!lstatSync(join(lockPath, token), { throwIfNoEntry: false })?.isFile()) {
    log.error({ lockPath }, 'this process no longer holds the lock; leaving it as it is');
    return;
  }
  const aside = `${lockPath}.${makerId(session)}`;
  await rename(lockPath, aside);
  // A token another process was adding may land in it meanwhile: retried.
  await rm(aside, { recursive: true, force: true, maxRetries: 5, retryDelay: 20 });
}

/** Removes private directories (a lock being made or removed) whose makers are gone. */
async function removeLeftovers(lockPath: string, session: string): Promise<void> {
  const prefix = `${basename(lockPath)}.`;
  const dir = dirname(lockPath);
  for (const name of await readdir(dir)) {
    const maker = name.startsWith(prefix) ? parseMaker(name.slice(prefix.length), name) : undefined;
    if (!maker || whyGone(maker, session) === undefined) continue;
    const path = join(dir, name);
    if (!(await lstat(path).catch(() => undefined))?.isDirectory()) continue;
    log.info({ path }, 'removing what an interrupted lock left');
    await rm(path, { recursive: true, force: true });
  }
}

/** Why the maker is provably gone, or undefined while it may run. */
function whyGone(m: Maker, session: string): string | undefined {
  if (m.session !== sessionTag(session)) return 'ran in another boot: the machine has restarted since';
  try {
    process.kill(m.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return `(pid ${m.pid}) is gone`;
  }
  const now = m.start === '0' ? undefined : startTime(m.pid);
  if (now !== undefined && now !== m.start) return `(pid ${m.pid}) is gone: the pid is another process's now`;
  return undefined;
}

/** `<boot>.<pid>.<start>.<random>`: whose a name is, readable without opening anything. */
function makerId(session: string): string {
  return `${sessionTag(session)}.${process.pid}.${startTime(process.pid) ?? '0'}.${randomBytes(8).toString('hex')}`;
}

function parseMaker(id: string, name: string): Maker | undefined {
  const m = /^([A-Za-z0-9_-]+)\.([1-9][0-9]*)\.([0-9]+)\.[0-9a-f]{16}$/.exec(id);
  return m ? { name, session: m[1]!, pid: Number(m[2]), start: m[3]! } : undefined;
}

/** A boot id as it goes into a name; '-' for none. */
function sessionTag(session: string): string {
  return session.replace(/[^A-Za-z0-9-]/g, '_') || '-';
}

/** The token's file: what a person reading the lock wants to know. */
async function writeToken(path: string, session: string): Promise<void> {
  const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  try {
    await fh.writeFile(`${JSON.stringify({ pid: process.pid, session, started: new Date().toISOString() })}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function describe(path: string, m: Maker): string {
  let started: unknown;
  try {
    const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      started = (JSON.parse(readFileSync(fd, 'utf8')) as { started?: unknown }).started;
    } finally {
      closeSync(fd);
    }
  } catch {
    // Unreadable or half-written: the name alone says who.
  }
  return typeof started === 'string' ? `pid ${m.pid}, since ${started}` : `pid ${m.pid}`;
}

/** Field 22 of /proc/<pid>/stat: when the process started, in ticks since boot. */
function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function notOurs(path: string, st: Stats, expected: 'a directory' | 'a file'): LockPathError {
  const found = st.isSymbolicLink() ? 'a symbolic link' : st.isDirectory() ? 'a directory' : st.isFile() ? 'a file' : 'a special file';
  return new LockPathError(path, found, expected);
}

function ignore(...codes: string[]) {
  return (e: unknown): undefined => {
    if (codes.includes((e as NodeJS.ErrnoException).code ?? '')) return undefined;
    throw e;
  };
}
