import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { withTempDir } from '../lib/resources.js';
import { run } from '../lib/run.js';
import { DATA } from '../names.js';
import { writeSystemImage } from './images.js';
import type { SystemTarget } from './target.js';

const FIRMWARE_DIRS = ['lib/firmware', 'usr/lib/firmware'];

/** The firmware directory of an unpacked package, if it ships firmware. */
export function firmwareDirOf(tree: string): string | undefined {
  return FIRMWARE_DIRS.map((d) => join(tree, d)).find((d) => existsSync(d));
}

/**
 * Adds a package's firmware to firmware.squashfs: the image's files, the
 * package's over them, squashed anew and renamed over the old image. The
 * running system keeps the firmware it mounted; the next boot has both.
 * Returns the new image's size, or undefined when the package ships none.
 */
export async function installFirmware(t: SystemTarget, tree: string): Promise<number | undefined> {
  const source = firmwareDirOf(tree);
  if (!source) return undefined;
  return withTempDir('.cairn-firmware-', async (work) => {
    const merged = join(work, 'firmware');
    const current = join(t.dataDir, DATA.firmware);
    if (existsSync(current)) {
      await run('unsquashfs', ['-no-progress', '-quiet', '-d', merged, current], { timeoutMs: 1800_000 });
    } else {
      await mkdir(merged);
    }
    await run('cp', ['-a', '--', `${source}/.`, `${merged}/`], { timeoutMs: 1800_000 });
    return writeSystemImage(merged, t.dataDir, DATA.firmware);
  }, t.dataDir);
}
