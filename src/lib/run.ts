import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { CommandFailedError, StoppedError, ToolMissingError } from './errors.js';
import { log } from './log.js';
import { busyboxStandIn, isBusybox, toolHint } from './toolPackages.js';

export interface RunOptions {
  /** Milliseconds before the command is killed; every call says how long it may take. */
  timeoutMs: number;
  cwd?: string;
  env?: Record<string, string>;
  input?: string | Buffer;
  /**
   * Called with each line the command prints on stdout, as it prints it.
   * stdout is then not kept: `stdout` in the result is empty, and memory
   * stays small however much the command prints.
   */
  onStdoutLine?: (line: string) => void;
  /** Called with each line the command prints on stderr, as it prints it (stderr is still kept). */
  onStderrLine?: (line: string) => void;
  /** How onStdoutLine's and onStderrLine's lines are decoded: latin1 keeps every byte, for file names. */
  lineEncoding?: 'utf8' | 'latin1';
  /** Aborting it kills the command; run then throws the signal's reason. */
  signal?: AbortSignal;
  /**
   * stdout goes to /dev/null, unread: for output that only has to be made.
   * A write there costs nothing, where through a pipe every byte is copied
   * (unsquashfs -cat writes a sparse file's holes out as zeros).
   */
  discardStdout?: boolean;
  /** Exit statuses that are answers rather than failures (e.g. 1 for "not found"). */
  okExitCodes?: readonly number[];
  /**
   * Kill the command when cairn dies, even by SIGKILL: a long mksquashfs must
   * not go on writing after the save that started it is gone.
   */
  dieWithParent?: boolean;
  /** Undoes what cairn made (an unmount, a loop device detached): runs even once cairn was told to stop (stopRunning). */
  cleanUp?: boolean;
  hint?: string;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** util-linux's setpriv; busybox's has no --pdeathsig. */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv', '/usr/sbin/setpriv', '/sbin/setpriv'].find((p) => existsSync(p) && !isBusybox(p));
let setprivMissingSaid = false;

/**
 * FILE and ARGS wrapped so the program is killed when cairn dies, even by
 * SIGKILL (setpriv --pdeathsig); as they are where setpriv is missing, said
 * once in the log.
 */
export function dyingWithParent(file: string, args: readonly string[]): [string, string[]] {
  if (SETPRIV) return [SETPRIV, ['--pdeathsig', 'KILL', '--', file, ...args]];
  if (!setprivMissingSaid) {
    setprivMissingSaid = true;
    log.warn(`util-linux's setpriv is missing: a command cairn started goes on if cairn is killed; ${toolHint('setpriv')}`);
  }
  return [file, [...args]];
}

/** The programs running now, and the signal that stopped cairn, if one did (stopRunning). */
const running = new Set<{ kill: (signal?: NodeJS.Signals) => boolean }>();
let stoppedBy: NodeJS.Signals | undefined;

/**
 * cairn was told to stop (SIGTERM from a service's stop, Ctrl-C): every
 * program it runs is stopped, and every later run fails, so the command
 * unwinds through its own clean-up (the temp image removed, the loop
 * devices and mounts it made undone) instead of leaving them behind.
 */
export function stopRunning(signal: NodeJS.Signals): void {
  stoppedBy = signal;
  for (const child of running) child.kill('SIGTERM');
}

/** Runs one program with an argv array (never a shell string), logged at debug level. */
export async function run(file: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
  if (stoppedBy && !options.cleanUp) throw new StoppedError(stoppedBy);
  const standIn = busyboxStandIn(file);
  if (standIn) throw new ToolMissingError(file, toolHint(file, options.hint), standIn);
  const [cmd, argv] = options.dieWithParent ? dyingWithParent(file, args) : [file, [...args]];
  const started = Date.now();
  log.debug({ argv: [file, ...args] }, 'run');
  const child = execa(cmd, argv, {
    reject: false,
    timeout: options.timeoutMs,
    cwd: options.cwd,
    // A user's locale must not change the messages cairn parses ("No space
    // left", "busy", ...): every command runs in the C locale.
    env: { ...options.env, LC_ALL: 'C' },
    input: options.input,
    buffer: { stdout: !options.onStdoutLine },
    stripFinalNewline: true,
    extendEnv: true,
    ...(options.input === undefined ? { stdin: 'ignore' as const } : {}),
    ...(options.discardStdout ? { stdout: 'ignore' as const } : {}),
  });
  const encoding = options.lineEncoding ?? 'utf8';
  if (options.onStdoutLine && child.stdout) splitLines(child.stdout, encoding, options.onStdoutLine);
  if (options.onStderrLine && child.stderr) splitLines(child.stderr, encoding, options.onStderrLine);
  const abort = () => child.kill('SIGKILL');
  options.signal?.addEventListener('abort', abort, { once: true });
  if (!options.cleanUp) running.add(child);
  const result = await child.finally(() => {
    running.delete(child);
    options.signal?.removeEventListener('abort', abort);
  });
  if (options.signal?.aborted) throw options.signal.reason;
  if (stoppedBy && !options.cleanUp) throw new StoppedError(stoppedBy);
  const stdout = String(result.stdout ?? '');
  const stderr = String(result.stderr ?? '');
  log.debug({ argv: [file, ...args], exitCode: result.exitCode, ms: Date.now() - started }, 'ran');

  const spawnCode = (result as { code?: string }).code;
  const setprivFound = cmd !== file && result.exitCode === 127 && /^setpriv: failed to execute .*No such file/m.test(stderr);
  if (spawnCode === 'ENOENT' || setprivFound) {
    throw new ToolMissingError(file, toolHint(file, options.hint));
  }
  const exitCode = result.exitCode;
  if (result.timedOut || exitCode === undefined || (exitCode !== 0 && !options.okExitCodes?.includes(exitCode))) {
    throw new CommandFailedError([file, ...args].join(' '), exitCode, tail(stderr || stdout), {
      timedOut: result.timedOut,
      hint: options.hint,
    });
  }
  return { stdout, stderr, exitCode };
}

/**
 * Calls ONLINE with each line of STREAM as it comes. Split as bytes, decoded
 * a whole line at a time: a chunk may end inside a UTF-8 character, and a
 * line may span many chunks. Progress bars redraw with \r: it ends a line too.
 */
function splitLines(stream: NodeJS.ReadableStream, encoding: 'utf8' | 'latin1', onLine: (line: string) => void): void {
  let pending: Buffer[] = [];
  const emit = (line: Buffer) => {
    if (line.length) onLine(line.toString(encoding));
  };
  stream.on('data', (chunk: Buffer) => {
    let start = 0;
    let nl = chunk.indexOf(0x0a);
    let cr = chunk.indexOf(0x0d);
    while (nl >= 0 || cr >= 0) {
      const end = nl < 0 ? cr : cr < 0 ? nl : Math.min(nl, cr);
      emit(Buffer.concat([...pending, chunk.subarray(start, end)]));
      pending = [];
      start = end + 1;
      if (nl >= 0 && nl < start) nl = chunk.indexOf(0x0a, start);
      if (cr >= 0 && cr < start) cr = chunk.indexOf(0x0d, start);
    }
    if (start < chunk.length) pending.push(chunk.subarray(start));
  });
  stream.on('end', () => emit(Buffer.concat(pending)));
}

/** The last few lines of a command's output: what a user needs to see of a failure. */
function tail(text: string, lines = 4): string {
  return text.trim().split('\n').slice(-lines).join('\n').slice(-800);
}
