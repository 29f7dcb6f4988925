import { writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Config } from '../config.js';
import { CommandFailedError, NoSpaceError } from '../lib/errors.js';
import { run } from '../lib/run.js';

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
 */
export async function squash(options: SquashOptions, freeBytes: () => Promise<number>): Promise<void> {
  const args = [options.upperDir, options.output, ...mksquashfsArgs(options.config)];
  if (options.excludes.length) {
    // mksquashfs matches the patterns itself, so what appears in the upper
    // layer while it runs (a new file in /tmp) is left out the same way.
    await writeFile(options.excludeFile, options.excludes.map((p) => `${p}\n`).join(''));
    args.push('-wildcards', '-ef', options.excludeFile);
  }
  try {
    await run('mksquashfs', args, {
      timeoutMs: 6 * 3600_000,
      dieWithParent: true,
      hint: 'mksquashfs failed: check that squashfs-tools is installed and works (mksquashfs -version), and the mksquashfs settings in /etc/cairn/cairn.conf',
      onStdoutLine: (line) => {
        const m = /\] +(\d+)\/(\d+) +\d+%/.exec(line);
        if (m && Number(m[2]) > 0) options.onProgress?.(Number(m[1]) / Number(m[2]));
      },
    });
  } catch (e) {
    if (e instanceof CommandFailedError && /No space left|ENOSPC/i.test(e.stderrTail)) {
      throw new NoSpaceError(dirname(options.output), await freeBytes(), options.upperBytes);
    }
    throw e;
  }
}
