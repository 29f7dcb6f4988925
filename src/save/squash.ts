import { open, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Config } from '../config.js';
import { CommandFailedError, KeepsChangingError, NoSpaceError } from '../lib/errors.js';
import { log } from '../lib/log.js';
import { run, type RunResult } from '../lib/run.js';
import { STATE } from '../names.js';
import { aclPseudoFile } from './acl.js';
import { compileExcludes, patternLines } from './exclude.js';
import { sparsePseudoFiles } from './sparse.js';
import { describeLeftOut, displayPath, walkTree, type LeftOut } from './tree.js';
import { literalExclude } from './wildcards.js';

export interface SquashOptions {
  upperDir: string;
  output: string;
  /** Exclude patterns (see exclude.ts); mksquashfs applies them itself. */
  excludes: readonly string[];
  /** Where the exclude list file is written. */
  excludeFile: string;
  config: Pick<Config, 'compression' | 'compressionLevel' | 'mksquashfsMem'>;
  /** The upper layer's size before compression, for the message when space runs out. */
  upperBytes: number;
  onProgress?: (fraction: number) => void;
  /** Said at once, before the squash: what is left out of the state and why. */
  onWarning?: (line: string) => void;
}

/** The mksquashfs options every save uses; the benchmark runs the bare tool with the same. */
export function mksquashfsArgs(config: SquashOptions['config']): string[] {
  const args = ['-noappend', '-quiet', '-comp', config.compression];
  // Only zstd and gzip take a level; xz, lz4 and lzo use their own defaults.
  if (config.compressionLevel !== undefined && (config.compression === 'zstd' || config.compression === 'gzip')) {
    args.push('-Xcompression-level', String(config.compressionLevel));
  }
  // xattrs carry overlayfs's opaque directories; -mem bounds the RAM it takes
  // from a system that lives in RAM.
  args.push('-xattrs', '-mem', config.mksquashfsMem);
  return args;
}

/**
 * Squashes the upper layer into `output`. Whiteouts are character devices
 * 0/0 and opaque directories carry trusted.overlay.opaque: squashfs stores
 * both as they are, with hard links, sparse files, owners and modes.
 *
 * What no state can hold (tree.ts walkTree forSave) is left out by name and
 * said at once, before the squash; the verification finds the same and the
 * report repeats it.
 */
export async function squash(options: SquashOptions, freeBytes: () => Promise<number>): Promise<{ leftOut: LeftOut[] }> {
  const saved = walkTree(options.upperDir, compileExcludes(options.excludes), { forSave: true });
  const { leftOut, packed } = saved;
  for (const warning of describeLeftOut(leftOut)) {
    log.warn(warning);
    options.onWarning?.(warning);
  }
  for (const p of packed) log.info({ paths: p.rels.map(displayPath), size: p.entry.size, data: p.entry.allocated }, 'kept without its holes');
  const args = [options.output, ...mksquashfsArgs(options.config)];
  // mksquashfs matches the patterns itself, so what appears in the upper
  // layer while it runs (a new file in /tmp) is left out the same way.
  // The records' names at the root are the save's own (acl.ts, sparse.ts);
  // a packed sparse file is in the image as its record only.
  // A path left out whose line would be too long (wildcards.ts) is also
  // past PATH_MAX for mksquashfs under the running system's upper layer,
  // which skips it; under a shorter one the verification would fail.
  const lines = [
    ...patternLines(options.excludes),
    ...leftOut.map((l) => literalExclude(l.rel)),
    ...packed.flatMap((p) => p.rels.map(literalExclude)),
    literalExclude(STATE.aclDump),
    literalExclude(STATE.sparseDir),
  ].filter((l): l is Buffer => l !== undefined);
  await writeFile(options.excludeFile, Buffer.concat(lines));
  args.push('-wildcards', '-ef', options.excludeFile);
  // squashfs keeps no POSIX ACLs: they go into a file of their own (acl.ts).
  const work = dirname(options.excludeFile);
  args.push('-p', await aclPseudoFile(options.upperDir, join(work, 'acls'), saved));
  for (const def of await sparsePseudoFiles(options.upperDir, join(work, 'sparse'), saved)) args.push('-p', def);
  try {
    const { stderr } = await runMksquashfs(options.upperDir, args, options.onProgress);
    await expectImage(options.output, stderr);
  } catch (e) {
    if (e instanceof CommandFailedError && /No space left|ENOSPC/i.test(e.stderrTail)) {
      throw new NoSpaceError(dirname(options.output), await freeBytes(), options.upperBytes);
    }
    throw e;
  }
  return { leftOut };
}

/** mksquashfs's words when a file's size changed while it read it: it then reads the file again, for as long as it changes. */
const READ_AGAIN = /^File (.*) changed size while reading filesystem, attempting to re-read$/s;
/** Reads of one file after which cairn stops mksquashfs: a program is writing it. */
const READS_ALLOWED = 4;

/**
 * mksquashfs ARGS over SOURCE, as every save and checkpoint runs it: killed
 * with cairn, its progress (when asked) read from its bar, and stopped with
 * a KeepsChangingError when a file keeps changing under it, where mksquashfs
 * would read it again for as long as a program writes it (a download, a
 * log): a save that never ends would hold up the power-off, a checkpoint
 * would keep a core busy.
 */
export async function runMksquashfs(source: string, args: readonly string[], onProgress?: (fraction: number) => void): Promise<RunResult> {
  const reads = new Map<string, number>();
  const stop = new AbortController();
  // A name holding a newline comes in several lines: they are put back together.
  let message: string[] = [];
  return run('mksquashfs', [source, ...args], {
    timeoutMs: 6 * 3600_000,
    dieWithParent: true,
    hint: MKSQUASHFS_HINT,
    // File names as bytes: a name need not be UTF-8.
    lineEncoding: 'latin1',
    signal: stop.signal,
    onStdoutLine: (line) => {
      const m = /\] +(\d+)\/(\d+) +\d+%/.exec(line);
      if (m && Number(m[2]) > 0) onProgress?.(Number(m[1]) / Number(m[2]));
    },
    onStderrLine: (line) => {
      // (Other lines between them are few; a bound keeps a flood of them cheap.)
      if (line.startsWith('File ') || message.length >= 16) message = [];
      message.push(line);
      const m = READ_AGAIN.exec(message.join('\n'));
      if (!m) return;
      message = [];
      const path = Buffer.from(m[1]!, 'latin1').toString('utf8');
      const n = (reads.get(path) ?? 1) + 1;
      reads.set(path, n);
      if (n >= READS_ALLOWED && !stop.signal.aborted) {
        // Named as the running system sees it, not by the upper layer's path.
        stop.abort(new KeepsChangingError(path.startsWith(`${source}/`) ? path.slice(source.length) : path, n));
      }
    },
  });
}

const MKSQUASHFS_HINT =
  'mksquashfs failed: check that squashfs-tools is installed and works (mksquashfs -version), and the mksquashfs settings in /etc/cairn/cairn.conf';

/**
 * A broken or stand-in mksquashfs can exit 0 and leave the temp image as
 * the save made it, empty: say so here, rather than let the verification
 * fail to mount it.
 */
async function expectImage(output: string, stderr: string): Promise<void> {
  const head = Buffer.alloc(4);
  let size = 0;
  const fh = await open(output, 'r').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  if (fh) {
    try {
      size = (await fh.stat()).size;
      await fh.read(head, 0, 4, 0);
    } finally {
      await fh.close();
    }
  }
  if (size >= SQUASHFS_SUPERBLOCK && head.toString('latin1') === 'hsqs') return;
  const found = fh ? `${output} holds ${size} bytes and no squashfs superblock` : `${output} is gone`;
  const said = stderr.trim().split('\n').slice(-2).join('\n');
  throw new CommandFailedError('mksquashfs', 0, `but wrote no image: ${found}${said ? `; it said: ${said}` : ''}`, {
    hint: MKSQUASHFS_HINT,
  });
}

/** A squashfs image begins with a superblock of this many bytes, its magic "hsqs" first. */
const SQUASHFS_SUPERBLOCK = 96;
