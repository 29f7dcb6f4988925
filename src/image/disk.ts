import { readFile, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { run } from '../lib/run.js';
import { LABELS, MODES } from '../names.js';
import { writeBiosBoot } from '../grub/biosboot.js';
import { GRUB_LIB } from '../grub/core.js';
import { LUKS, writeLuksVolume, type LuksKdf } from './luks.js';
import { planLayout, SECTOR, sfdiskScript, type Layout } from './layout.js';

/**
 * Writes the stick image without mounting anything: the partition table with
 * sfdisk, the ESP with mkfs.vfat and mtools, the data partition with mke2fs
 * -d at its offset (or encrypted into it, see luks.ts). Build machines need
 * neither partition devices, nor vfat or device-mapper in their kernel.
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

export interface DataPartitionOptions {
  /** Encrypt it (LUKS2) with this passphrase and key derivation. */
  luks?: { passphrase: string; kdf: LuksKdf };
  /** Scratch space for the plain ext4 of an encrypted partition. */
  workDir: string;
}

/**
 * Makes the data partition's ext4, filled from a staging directory: at its
 * offset, or, encrypted, in a file of its own that becomes the LUKS payload
 * (the partition less the header) and is removed afterwards.
 */
export async function writeDataPartition(image: string, layout: Layout, stage: string, o: DataPartitionOptions): Promise<void> {
  const p = layout.data;
  const start = p.startSector * SECTOR;
  const bytes = p.sectors * SECTOR;
  const mkfs = (args: string[], target: string, size: number) =>
    run('mkfs.ext4', ['-q', '-F', '-L', LABELS.data, ...args, '-d', stage, target, `${size / 1024}k`], {
      timeoutMs: 1800_000,
      hint: 'install e2fsprogs (apt-get install e2fsprogs)',
    });
  // mke2fs -d gives the root directory 0755 whatever the stage's mode:
  // set it (root's only, names.ts MODES) in the new file system.
  const protect = (target: string) =>
    run('debugfs', ['-w', '-R', `set_inode_field / mode 0${(0o40000 | MODES.dataRoot).toString(8)}`, target], {
      timeoutMs: 60_000,
      hint: 'install e2fsprogs (apt-get install e2fsprogs; on Alpine apk add e2fsprogs-extra)',
    });
  if (!o.luks) {
    await mkfs(['-E', `offset=${start}`], image, bytes);
    await protect(`${image}?offset=${start}`);
    return;
  }
  const plain = join(o.workDir, 'data.ext4');
  await rm(plain, { force: true });
  try {
    await mkfs([], plain, bytes - LUKS.headerBytes);
    await protect(plain);
    await writeLuksVolume({ plain, target: image, offsetBytes: start, passphrase: o.luks.passphrase, label: LABELS.data, kdf: o.luks.kdf });
  } finally {
    await rm(plain, { force: true });
  }
}

/** Legacy BIOS boot: boot.img in the MBR, core.img in the BIOS boot partition. */
export async function writeImageBiosBoot(image: string, layout: Layout, coreImg: string): Promise<void> {
  await writeBiosBoot(image, layout.bios, await readFile(coreImg), await readFile(join(GRUB_LIB, 'i386-pc', 'boot.img')));
}
