import { existsSync, statSync } from 'node:fs';
import { copyFile, mkdir, readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { readBootState, writeBootState } from '../esp/bootState.js';
import type { Esp } from '../esp/esp.js';
import { writeBiosBoot, type SectorRange } from '../grub/biosboot.js';
import { EFI_CORE_PATH, GRUB_LIB, GRUB_PLATFORMS, grubModuleFiles, grubVersionOf, makeGrubCore, type GrubPlatform } from '../grub/core.js';
import { TYPE_GUIDS } from '../image/layout.js';
import { log } from '../lib/log.js';
import { withTempDir } from '../lib/resources.js';
import { run } from '../lib/run.js';
import type { SystemTarget } from './target.js';

/**
 * GRUB's boot files on the stick, remade from the GRUB installed in the
 * system after a GRUB package changed it. GRUB's own installers (grub-install,
 * update-grub) never run on a cairn: they would write a menu of their own to
 * /boot, in the RAM layer. Instead cairn builds each platform's core image
 * from the new modules, with its own first config, and puts it where the
 * firmware loads it:
 *
 *   x86_64-efi  EFI/BOOT/BOOTX64.EFI on the ESP (temp file, fsync, rename)
 *   i386-pc     the free slot of the BIOS boot partition, then the MBR
 *               (src/grub/biosboot.ts)
 *
 * then the ESP's module directory for the GRUB prompt, and last the version
 * in the boot record. The menu (grub/grub.cfg) is cairn's and stays. A power
 * cut leaves each platform booting the old core or the new one; the record
 * still names the old version, so the next run does the platform again.
 */

export interface GrubUpdate {
  platform: GrubPlatform;
  version: string;
  /** The version the stick had, if the boot record knew it. */
  previous?: string;
  /** Where the core went. */
  written: string;
}

export interface GrubUpdateOptions {
  /** GRUB's module directories (default /usr/lib/grub). */
  libDir?: string;
  /** The disk holding the BIOS boot partition (default: the ESP's disk). */
  disk?: string;
  /** Rewrite the boot files even where the version is the one recorded. */
  force?: boolean;
}

/** What the package hooks tell the user about an update, a line each. */
export function grubUpdateLines(updates: readonly GrubUpdate[]): string[] {
  return updates.map((u) => `GRUB ${u.platform} ${u.version}: boot files written to ${u.written}; cairn's menu kept`);
}

/** Brings the stick's GRUB boot files to the installed GRUB's version; returns what it changed. */
export async function updateGrubBootFiles(t: SystemTarget, o: GrubUpdateOptions = {}): Promise<GrubUpdate[]> {
  const libDir = o.libDir ?? GRUB_LIB;
  const installed = new Map<GrubPlatform, string>();
  for (const p of GRUB_PLATFORMS) {
    const v = await grubVersionOf(p, libDir);
    if (v) installed.set(p, v);
  }
  if (!installed.size) return [];
  let state = await readBootState(t.esp);
  const updates: GrubUpdate[] = [];
  await withTempDir('cairn-grub-', async (work) => {
    for (const [platform, version] of installed) {
      const previous = state.grub?.[platform];
      if (!o.force && previous === version) continue;
      const core = join(work, `core-${platform}`);
      await makeGrubCore(platform, core, work, libDir);
      let written: string;
      if (platform === 'x86_64-efi') {
        await t.esp.install(EFI_CORE_PATH, { file: core });
        written = `/${EFI_CORE_PATH} on the ESP`;
      } else {
        const disk = o.disk ?? (await diskOf(t.esp));
        const bios = disk && (await biosBootPartition(disk));
        if (!disk || !bios) {
          log.warn({ esp: t.esp.device }, 'no BIOS boot partition found beside the ESP: legacy BIOS boots keep their GRUB');
          continue;
        }
        const slot = await writeBiosBoot(disk, bios, await readFile(core), await readFile(join(libDir, platform, 'boot.img')));
        written = `${disk} sectors ${slot.startSector}-${slot.startSector + slot.sectors - 1} (BIOS boot partition)`;
      }
      const modules = join(work, `modules-${platform}`);
      await mkdir(modules);
      for (const f of await grubModuleFiles(platform, libDir)) await copyFile(f, join(modules, basename(f)));
      await t.esp.replaceTree(`grub/${platform}`, modules);
      state = { ...state, grub: { ...state.grub, [platform]: version } };
      await writeBootState(t.esp, t.dataDir, state);
      updates.push({ platform, version, previous, written });
    }
  });
  return updates;
}

/**
 * The whole disk an ESP lies on: the image file itself when the ESP is a
 * partition of an image, the parent device of a partition device, or
 * undefined for an ESP that is a file system image alone.
 */
export async function diskOf(esp: Esp): Promise<string | undefined> {
  if (esp.offset > 0) return esp.device;
  if (!statSync(esp.device).isBlockDevice()) return undefined;
  const r = await run('lsblk', ['--nodeps', '--noheadings', '--output', 'PKNAME', esp.device], { timeoutMs: 30_000, hint: 'install util-linux\'s lsblk' });
  const parent = r.stdout.trim();
  return parent && existsSync(`/dev/${parent}`) ? `/dev/${parent}` : undefined;
}

/** The BIOS boot partition of a GPT disk, from its partition table. */
export async function biosBootPartition(disk: string): Promise<SectorRange | undefined> {
  const r = await run('sfdisk', ['--json', disk], { timeoutMs: 30_000, okExitCodes: [1], hint: 'install fdisk (apt-get install fdisk)' });
  if (r.exitCode !== 0) return undefined;
  const table = (JSON.parse(r.stdout) as { partitiontable?: { partitions?: { start: number; size: number; type: string }[] } }).partitiontable;
  const p = table?.partitions?.find((x) => x.type.toUpperCase() === TYPE_GUIDS.bios);
  return p && { startSector: p.start, sectors: p.size };
}
