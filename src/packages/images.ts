import { rm, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncFile, renameDurably } from '../lib/durable.js';
import { PartitionFullError } from '../lib/errors.js';
import { run } from '../lib/run.js';

/** mksquashfs options for the system's images (base, modules, firmware). */
export const SYSTEM_IMAGE_ARGS = ['-noappend', '-quiet', '-no-progress', '-comp', 'zstd', '-xattrs'] as const;

/** Squashes a tree into an image; `extra` adds options (excludes). */
export async function squashTree(source: string, target: string, extra: readonly string[] = []): Promise<void> {
  await run('mksquashfs', [source, target, ...SYSTEM_IMAGE_ARGS, ...extra], { timeoutMs: 3600_000, dieWithParent: true });
}

/**
 * Puts a system image on the data partition: squash to a temp name, fsync,
 * rename over the old one, fsync the directory. A running system keeps
 * using the image it mounted (its inode lives on until unmounted); the next
 * boot mounts the new one. A failure removes the temp file and leaves the
 * old image as it was.
 */
export async function writeSystemImage(source: string, dataDir: string, name: string): Promise<number> {
  const target = join(dataDir, name);
  const temp = `${target}.tmp`;
  await rm(temp, { force: true });
  try {
    // zstd's default level (15) costs minutes on the machine a stick runs
    // on; level 3 is several times faster for a few percent more bytes.
    await squashTree(source, temp, ['-Xcompression-level', '3']);
    await fsyncFile(temp);
    await renameDurably(temp, target);
  } catch (e) {
    await rm(temp, { force: true });
    const fs = await statfs(dataDir).catch(() => undefined);
    if (fs && fs.bavail * fs.bsize < 16 << 20) {
      throw new PartitionFullError(`the data partition is full: ${name} could not be written`, 'remove unused kernels or saved states, then try again');
    }
    throw e;
  }
  return (await stat(target)).size;
}
