import { open, stat } from 'node:fs/promises';
import { IntegrityError, PathError } from './lib/errors.js';
import { withLoopDevice, withMount, withTempDir } from './lib/resources.js';
import { checkIntegrity, type Seal } from './state/seal.js';
import { toFsPath, walkTree } from './save/tree.js';

export interface ImageCheck {
  image: string;
  seal: Seal;
  files: number;
  bytesRead: number;
}

/**
 * `cairn verify`: the seal and checksum the initramfs checks, then a
 * read-only mount in which every file is read, so decompression is proven too.
 */
export async function verifyImage(image: string): Promise<ImageCheck> {
  const st = await stat(image).catch(() => undefined);
  if (!st) throw new PathError(image, 'no such file');
  if (!st.isFile()) throw new PathError(image, 'not a regular file');
  const check = await checkIntegrity(image);
  if (!check.ok) throw new IntegrityError(image, check.problem);
  const bytesRead = await withLoopDevice(image, { readOnly: true }, (device) =>
    withTempDir('cairn-verify-', (mnt) =>
      withMount(device, mnt, { type: 'squashfs', options: ['ro'] }, async () => {
        const tree = walkTree(mnt);
        let total = 0;
        const buf = Buffer.allocUnsafe(1 << 20);
        for (const [rel, e] of tree.entries) {
          if (e.type !== 'file') continue;
          const fh = await open(toFsPath(mnt, rel), 'r');
          try {
            for (let n; (n = (await fh.read(buf, 0, buf.length)).bytesRead) > 0; ) total += n;
          } finally {
            await fh.close();
          }
        }
        return { files: tree.entries.size, total };
      }),
    ),
  ).catch((e: unknown) => {
    if (e instanceof IntegrityError) throw e;
    throw new IntegrityError(image, `the checksum matches but the image does not mount and read: ${(e as Error).message}`);
  });
  return { image, seal: check.seal, files: bytesRead.files, bytesRead: bytesRead.total };
}
