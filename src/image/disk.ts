import { readFile, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { run } from '../lib/run.js';
import { LABELS } from '../names.js';
import { writeBiosBoot } from '../grub/biosboot.js';
import { GRUB_LIB } from '../grub/core.js';
import { planLayout, SECTOR, sfdiskScript, type Layout } from './layout.js';

/**
 * Writes the stick image without mounting anything: the partition table with
 * sfdisk, the ESP with mkfs.vfat and mtools, the data partition with mke2fs
 * -d at its offset. Build machines need neither partition devices
 * nor vfat in their kernel.
 */
export async function createDisk(image: string, sizeBytes: number, espMiB: number): Promise<Layout> {
  const layout = planLayout(sizeBytes, espMiB);
  await run('truncate', ['-s', String(layout.totalSectors * SECTOR), image], { timeoutMs: 60_000 });
  await run('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', image], {
    input: sfdiskScript(layout),
    timeoutMs: 60_000,
    hint: 'install fdisk (apt-get install fdisk)',
  });
  return layout;
}

/**
 * Formats the ESP and copies `files` (ESP path -> host path) onto it. The FAT
 * is made as a file of its own (mtools misreads FAT32 at an offset inside a
 * larger file) and then copied into its place.
 */
export async function writeEsp(image: string, layout: Layout, files: Map<string, string>, workDir: string): Promise<void> {
  const p = layout.esp;
  const esp = join(workDir, 'esp.fat');
  await rm(esp, { force: true });
  await run('mkfs.vfat', ['-F', '32', '-n', LABELS.esp, '-C', esp, String((p.sectors * SECTOR) / 1024)], {
    timeoutMs: 120_000,
    hint: 'install dosfstools (apt-get install dosfstools)',
  });
  const dirs = new Set<string>();
  const byDir = new Map<string, string[]>();
  for (const [espPath, host] of files) {
    if (basename(host) !== basename(espPath)) throw new Error(`ESP file ${espPath} must keep the name of ${host}`);
    const parts = espPath.split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
    const dir = parts.join('/');
    byDir.set(dir, [...(byDir.get(dir) ?? []), host]);
  }
  const env = { MTOOLS_SKIP_CHECK: '1' };
  const hint = 'install mtools (apt-get install mtools)';
  for (const dir of [...dirs].sort()) await run('mmd', ['-i', esp, `::/${dir}`], { timeoutMs: 60_000, env, hint });
  // One mcopy per directory keeps the number of processes small.
  for (const [dir, hosts] of byDir) await run('mcopy', ['-i', esp, '-o', ...hosts, `::/${dir}`], { timeoutMs: 600_000, env, hint });
  await run('dd', [`if=${esp}`, `of=${image}`, 'bs=1M', `seek=${p.startSector * SECTOR}`, 'oflag=seek_bytes', 'conv=notrunc,sparse', 'status=none'], {
    timeoutMs: 600_000,
  });
  await rm(esp, { force: true });
}

/** Makes the data partition's ext4 at its offset, filled from a staging directory. */
export async function writeDataPartition(image: string, layout: Layout, stage: string): Promise<void> {
  const p = layout.data;
  await run(
    'mkfs.ext4',
    ['-q', '-F', '-L', LABELS.data, '-E', `offset=${p.startSector * SECTOR}`, '-d', stage, image, `${(p.sectors * SECTOR) / 1024}k`],
    { timeoutMs: 1800_000, hint: 'install e2fsprogs (apt-get install e2fsprogs)' },
  );
}

/** Legacy BIOS boot: boot.img in the MBR, core.img in the BIOS boot partition. */
export async function writeImageBiosBoot(image: string, layout: Layout, coreImg: string): Promise<void> {
  await writeBiosBoot(image, layout.bios, await readFile(coreImg), await readFile(join(GRUB_LIB, 'i386-pc', 'boot.img')));
}
