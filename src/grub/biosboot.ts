import { open } from 'node:fs/promises';

/**
 * Legacy BIOS boot: GRUB's boot.img in the MBR and its core.img in the BIOS
 * boot partition, done the way grub-bios-setup embeds them (GRUB 2.06
 * util/setup.c, the embedding path, without Reed-Solomon codes). grub-install
 * cannot do it here: it wants the ESP mounted from a partition device of the
 * image, which loop devices on build machines without partition scanning do
 * not provide, and it is a byte-level job best kept explicit.
 *
 * The BIOS boot partition holds two slots. A new core is written to the slot
 * boot.img does not point at, and only then is the MBR rewritten to point at
 * it: one sector, written whole. A power cut at any moment leaves a disk
 * whose MBR names a complete core, the old one or the new.
 */

const SECTOR = 512;
// Offsets in boot.img (grub/i386/pc/boot.h).
const BPB_START = 0x03;
const BPB_END = 0x5a;
const KERNEL_SECTOR = 0x5c;
const BOOT_DRIVE = 0x64;
const DRIVE_CHECK = 0x66;
const WINDOWS_NT_MAGIC = 0x1b8;
const PART_END = 0x1fe;
// A blocklist entry at the end of core.img's first sector: u64 start, u16 len, u16 segment.
const BLOCKLIST_SIZE = 12;
// Where the BIOS loads core.img's second sector on (GRUB_BOOT_I386_PC_KERNEL_SEG + 0x20).
const FIRST_SEGMENT = 0x820;

export interface SectorRange {
  startSector: number;
  sectors: number;
}

export interface BiosBootImages {
  /** The new first sector of the disk: boot.img with the disk's partition table. */
  mbr: Buffer;
  /** core.img, padded to whole sectors, with its blocklist pointing at where it lies. */
  core: Buffer;
}

/**
 * Patches boot.img and core.img for a core placed at `coreSector` (the BIOS
 * boot partition's first sector) of a disk whose current first sector is
 * `oldMbr`. The caller writes `mbr` at sector 0 and `core` at `coreSector`.
 */
export function embedBiosBoot(bootImg: Buffer, coreImg: Buffer, oldMbr: Buffer, coreSector: number, maxSectors: number): BiosBootImages {
  if (bootImg.length !== SECTOR) throw new Error(`boot.img is ${bootImg.length} bytes, not ${SECTOR}`);
  if (oldMbr.length !== SECTOR) throw new Error('the first sector of the disk must be given whole');
  const sectors = Math.ceil(coreImg.length / SECTOR);
  if (sectors > maxSectors) throw new Error(`core.img needs ${sectors} sectors; the BIOS boot partition has ${maxSectors}`);

  const mbr = Buffer.from(bootImg);
  oldMbr.copy(mbr, BPB_START, BPB_START, BPB_END);
  // A hard disk: skip boot.img's floppy probe (buggy BIOSes pass a wrong drive).
  mbr[DRIVE_CHECK] = 0x90;
  mbr[DRIVE_CHECK + 1] = 0x90;
  // Keep the disk's signature and (protective) partition table.
  oldMbr.copy(mbr, WINDOWS_NT_MAGIC, WINDOWS_NT_MAGIC, PART_END);
  mbr.writeBigUInt64LE(BigInt(coreSector), KERNEL_SECTOR);
  mbr[BOOT_DRIVE] = 0xff;

  const core = Buffer.alloc(sectors * SECTOR);
  coreImg.copy(core);
  // Clear the blocklists grub-mkimage left, then describe the rest of the
  // core as one run of sectors right after its first one.
  const first = SECTOR - BLOCKLIST_SIZE;
  for (let at = first; at > 0 && core.readUInt16LE(at + 8) !== 0; at -= BLOCKLIST_SIZE) core.fill(0, at, at + BLOCKLIST_SIZE);
  if (sectors > 1) {
    core.writeBigUInt64LE(BigInt(coreSector + 1), first);
    core.writeUInt16LE(sectors - 1, first + 8);
    core.writeUInt16LE(FIRST_SEGMENT, first + 10);
  }
  core.fill(0, first - BLOCKLIST_SIZE, first); // the terminator
  return { mbr, core };
}

/** The sector boot.img in this MBR loads the core from (0 on a disk without GRUB). */
export function coreSectorOf(mbr: Buffer): number {
  return Number(mbr.readBigUInt64LE(KERNEL_SECTOR));
}

/** The half of the BIOS boot partition a new core goes to: the one the MBR does not point at now. */
export function nextCoreSlot(mbr: Buffer, bios: SectorRange): SectorRange {
  const half = Math.floor(bios.sectors / 2);
  const first = { startSector: bios.startSector, sectors: half };
  return coreSectorOf(mbr) === first.startSector ? { startSector: bios.startSector + half, sectors: half } : first;
}

/**
 * Writes a core to the free slot of the BIOS boot partition of `disk` (a
 * block device or a disk image), flushes it, then points the MBR at it and
 * flushes again. Returns the slot written.
 */
export async function writeBiosBoot(disk: string, bios: SectorRange, coreImg: Buffer, bootImg: Buffer): Promise<SectorRange> {
  const fh = await open(disk, 'r+');
  try {
    const oldMbr = Buffer.alloc(SECTOR);
    await fh.read(oldMbr, 0, SECTOR, 0);
    const slot = nextCoreSlot(oldMbr, bios);
    const { mbr, core } = embedBiosBoot(bootImg, coreImg, oldMbr, slot.startSector, slot.sectors);
    await fh.write(core, 0, core.length, slot.startSector * SECTOR);
    await fh.sync();
    await fh.write(mbr, 0, SECTOR, 0);
    await fh.sync();
    return slot;
  } finally {
    await fh.close();
  }
}
