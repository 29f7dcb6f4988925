import { LABELS } from '../names.js';

/**
 * The stick's partitions (DESIGN.md "On the stick"), in 512-byte sectors:
 *
 *   sectors 2048-4095   BIOS boot partition: GRUB's core for legacy BIOS
 *   partition 1         ESP, FAT32: EFI/BOOT/BOOTX64.EFI, grub/, kernels
 *   partition 2         ext4 "cairn-data": the system images and saved states
 *
 * The BIOS boot partition is numbered 3 but placed first, so that the ESP
 * and the data partition keep the numbers the design gives them.
 */
export const SECTOR = 512;
const MiB = 1 << 20;

export interface Partition {
  number: number;
  name: string;
  startSector: number;
  sectors: number;
  typeGuid: string;
}

export interface Layout {
  totalSectors: number;
  bios: Partition;
  esp: Partition;
  data: Partition;
}

export const TYPE_GUIDS = {
  bios: '21686148-6449-6E6F-744E-656564454649',
  esp: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  linux: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
} as const;

/** GPT keeps a backup table in the last 33 sectors; one MiB is left free there. */
const TAIL_SECTORS = MiB / SECTOR;

export function planLayout(sizeBytes: number, espMiB: number): Layout {
  const totalSectors = Math.floor(sizeBytes / SECTOR);
  const bios = { number: 3, name: 'bios-boot', startSector: 2048, sectors: 2048, typeGuid: TYPE_GUIDS.bios };
  const esp = { number: 1, name: LABELS.esp, startSector: 4096, sectors: (espMiB * MiB) / SECTOR, typeGuid: TYPE_GUIDS.esp };
  const dataStart = esp.startSector + esp.sectors;
  const data = {
    number: 2,
    name: LABELS.data,
    startSector: dataStart,
    sectors: totalSectors - dataStart - TAIL_SECTORS,
    typeGuid: TYPE_GUIDS.linux,
  };
  return { totalSectors, bios, esp, data };
}

/** The sfdisk script that writes the layout. */
export function sfdiskScript(layout: Layout): string {
  const line = (p: Partition, size = true) =>
    `start=${p.startSector}${size ? `, size=${p.sectors}` : ''}, type=${p.typeGuid}, name="${p.name}"`;
  return ['label: gpt', 'unit: sectors', 'first-lba: 2048', line(layout.esp), line(layout.data), line(layout.bios), ''].join('\n');
}
