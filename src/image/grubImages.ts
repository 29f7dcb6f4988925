import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { run } from '../lib/run.js';
import { LABELS } from '../names.js';

/** Where Debian's grub-pc-bin and grub-efi-amd64-bin keep GRUB's modules. */
export const GRUB_LIB = '/usr/lib/grub';

export type GrubPlatform = 'i386-pc' | 'x86_64-efi';

/**
 * Modules built into each core image: enough to find the ESP by label and
 * read the menu. The menu's own insmod lines load the rest from the ESP.
 */
const CORE_MODULES: Record<GrubPlatform, string[]> = {
  'i386-pc': ['biosdisk', 'part_gpt', 'part_msdos', 'fat', 'search', 'search_label', 'search_fs_uuid', 'normal', 'configfile'],
  'x86_64-efi': ['part_gpt', 'part_msdos', 'fat', 'search', 'search_label', 'search_fs_uuid', 'normal', 'configfile'],
};

/**
 * The core image for one platform, with a built-in first config that finds
 * the ESP by its label, never by disk order, and hands over to grub/grub.cfg.
 */
export async function makeGrubCore(platform: GrubPlatform, output: string, workDir: string): Promise<void> {
  const early = join(workDir, `early-${platform}.cfg`);
  await writeFile(early, `search --no-floppy --set=root --label ${LABELS.esp}\nset prefix=($root)/grub\n`);
  await run(
    'grub-mkimage',
    ['--format', platform, '--output', output, '--config', early, '--prefix', '/grub', ...CORE_MODULES[platform]],
    { timeoutMs: 120_000, hint: 'install grub-pc-bin and grub-efi-amd64-bin (apt-get install grub-pc-bin grub-efi-amd64-bin)' },
  );
}

/** The module files a platform's menu may load at run time (copied to the ESP's grub/<platform>/). */
export async function grubModuleFiles(platform: GrubPlatform): Promise<string[]> {
  const dir = join(GRUB_LIB, platform);
  return (await readdir(dir)).filter((f) => /\.(mod|lst)$/.test(f)).map((f) => join(dir, f));
}
