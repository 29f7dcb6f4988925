import { closeSync, openSync, readSync } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { CommandFailedError, IntegrityError, PathError, ToolMissingError } from './lib/errors.js';
import { withLoopDevice, withMount, withTempDir } from './lib/resources.js';
import { run } from './lib/run.js';
import { checkIntegrity, type Seal } from './state/seal.js';
import { withReach } from './save/reach.js';
import { walkTree } from './save/tree.js';

export interface ImageCheck {
  image: string;
  seal: Seal;
  files: number;
  bytesRead: number;
}

/**
 * `cairn verify`: the seal and checksum the initramfs checks, then a
 * read-only mount in which every file's data is decompressed, so the image
 * is proven to read back, in a time that follows the bytes it stores. A
 * file with holes goes to `unsquashfs -cat` (the boot's own reader), which
 * passes a hole by writing zeros to /dev/null; read through the mount,
 * every hole is filled page by page (a 16 GiB sparse file: 70 s, against
 * 0.1 s). Other files are read through the mount.
 */
export async function verifyImage(image: string): Promise<ImageCheck> {
  // Not followed: a symbolic link or a directory is refused by the check, as at boot.
  if (!(await lstat(image).catch(() => undefined))) throw new PathError(image, 'no such file');
  const check = await checkIntegrity(image, { deltas: true });
  if (!check.ok) throw new IntegrityError(image, check.problem);
  const read = await withLoopDevice(image, { readOnly: true }, (device) =>
    withTempDir('cairn-verify-', (mnt) =>
      withMount(device, mnt, { type: 'squashfs', options: ['ro'] }, async () => {
        const tree = walkTree(mnt);
        let bytes = 0;
        const sparse: string[] = [];
        const buf = Buffer.allocUnsafe(1 << 20);
        withReach(mnt, (reach) => {
          for (const [rel, e] of tree.entries) {
            if (e.type !== 'file') continue;
            // squashfs counts a file's blocks without its holes.
            const arg = e.allocated < e.size ? unsquashfsArg(rel) : undefined;
            if (arg !== undefined) {
              sparse.push(arg);
              bytes += e.allocated;
              continue;
            }
            const fd = openSync(reach.path(rel), 'r');
            try {
              for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) bytes += n;
            } finally {
              closeSync(fd);
            }
          }
        });
        for (const batch of argBatches(sparse)) {
          await run('unsquashfs', ['-no-progress', '-no-wildcards', '-cat', image, ...batch], {
            timeoutMs: 3600_000,
            discardStdout: true,
            dieWithParent: true,
          }).catch((e: unknown) => {
            // Its command line names thousands of files: only its words are worth showing.
            if (e instanceof CommandFailedError) throw new IntegrityError(image, `the checksum matches but a file does not read back: ${e.stderrTail}`);
            throw e;
          });
        }
        return { files: tree.entries.size, bytes };
      }),
    ),
  ).catch((e: unknown) => {
    if (e instanceof IntegrityError || e instanceof ToolMissingError) throw e;
    throw new IntegrityError(image, `the checksum matches but the image does not mount and read: ${(e as Error).message}`);
  });
  return { image, seal: check.seal, files: read.files, bytesRead: read.bytes };
}

/**
 * A path (latin1 form) as an argument: argv strings reach the program as
 * UTF-8, so a name that is not valid UTF-8 cannot be passed (undefined) and
 * is read through the mount instead.
 */
function unsquashfsArg(rel: string): string | undefined {
  const text = Buffer.from(rel, 'latin1').toString('utf8');
  return Buffer.from(text, 'utf8').toString('latin1') === rel ? text : undefined;
}

/** Paths in groups well below the kernel's limit on a command line (ARG_MAX, 2 MiB by default). */
function* argBatches(paths: readonly string[], maxBytes = 256 * 1024): Generator<string[]> {
  let batch: string[] = [];
  let bytes = 0;
  for (const p of paths) {
    const n = Buffer.byteLength(p) + 1;
    if (batch.length && bytes + n > maxBytes) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(p);
    bytes += n;
  }
  if (batch.length) yield batch;
}
