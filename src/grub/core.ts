import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../lib/run.js';
import { LABELS } from '../names.js';

/** Where GRUB's packages keep its modules (Debian's grub-pc-bin and grub-efi-amd64-bin, Alpine's grub-bios and grub-efi). */
export const GRUB_LIB = '/usr/lib/grub';

export type GrubPlatform = 'i386-pc' | 'x86_64-efi';
export const GRUB_PLATFORMS: readonly GrubPlatform[] = ['x86_64-efi', 'i386-pc'];

/** Where each platform's core image lives on the ESP; the BIOS core lives in the BIOS boot partition instead. */
export const EFI_CORE_PATH = 'EFI/BOOT/BOOTX64.EFI';

/**
 * Modules built into each core image: all that the menu (grub/grub.cfg.in
 * and src/grub/render.ts) uses, and a few for a rescue at the GRUB prompt.
 * The core never loads a module from the ESP to boot, so a power cut while
 * a GRUB update replaces the ESP's module directory cannot leave a core
 * with modules of another version under it.
 */
const MENU_MODULES = [
  'part_gpt', 'part_msdos', 'fat', 'search', 'search_label', 'search_fs_uuid', 'normal', 'configfile',
  'test', 'echo', 'serial', 'terminal', 'linux', 'ls', 'cat', 'reboot', 'halt',
];
const CORE_MODULES: Record<GrubPlatform, string[]> = {
  'i386-pc': ['biosdisk', ...MENU_MODULES],
  'x86_64-efi': MENU_MODULES,
};

/**
 * The core image for one platform, made from the modules in `libDir`, with a
 * built-in first config that finds the ESP by its label, never by disk
 * order, and hands over to grub/grub.cfg.
 */
export async function makeGrubCore(platform: GrubPlatform, output: string, workDir: string, libDir = GRUB_LIB): Promise<void> {
  const early = join(workDir, `early-${platform}.cfg`);
  await writeFile(early, `search --no-floppy --set=root --label ${LABELS.esp}\nset prefix=($root)/grub\n`);
  await run(
    'grub-mkimage',
    [
      '--format', platform,
      '--directory', join(libDir, platform),
      '--output', output,
      '--config', early,
      '--prefix', '/grub',
      ...CORE_MODULES[platform],
    ],
    { timeoutMs: 120_000, hint: 'install GRUB (apt-get install grub-pc-bin grub-efi-amd64-bin / apk add grub-bios grub-efi)' },
  );
}

/** The module files a platform's GRUB prompt may load (the ESP's grub/<platform>/). */
export async function grubModuleFiles(platform: GrubPlatform, libDir = GRUB_LIB): Promise<string[]> {
  const dir = join(libDir, platform);
  return (await readdir(dir)).filter((f) => /\.(mod|lst)$/.test(f)).map((f) => join(dir, f));
}

/**
 * The GRUB package version of a platform's modules, from the modinfo.sh
 * that every GRUB build installs beside them ("2.06-13+deb12u2"); undefined
 * when the platform is not installed there.
 */
export async function grubVersionOf(platform: GrubPlatform, libDir = GRUB_LIB): Promise<string | undefined> {
  const modinfo = join(libDir, platform, 'modinfo.sh');
  if (!existsSync(modinfo)) return undefined;
  const text = await readFile(modinfo, 'utf8');
  const m = /^grub_package_version="([^"]*)"/m.exec(text) ?? /^grub_version="([^"]*)"/m.exec(text);
  return m?.[1] || 'unknown';
}
