import { describe, expect, it } from 'vitest';
import { coreSectorOf, embedBiosBoot, nextCoreSlot } from '../../src/grub/biosboot.js';
import { planLayout, sfdiskScript, TYPE_GUIDS } from '../../src/image/layout.js';

describe('planLayout', () => {
  it('puts the BIOS boot partition first, then the ESP and the data partition, inside the disk', () => {
    const l = planLayout(4096 * 1024 * 1024, 256);
    expect(l.bios).toMatchObject({ startSector: 2048, sectors: 2048, typeGuid: TYPE_GUIDS.bios });
    expect(l.esp.startSector).toBe(l.bios.startSector + l.bios.sectors);
    expect(l.esp.sectors * 512).toBe(256 * 1024 * 1024);
    expect(l.data.startSector).toBe(l.esp.startSector + l.esp.sectors);
    // The backup GPT needs the last 33 sectors.
    expect(l.data.startSector + l.data.sectors).toBeLessThanOrEqual(l.totalSectors - 33);
    expect(l.esp.number).toBe(1);
    expect(l.data.number).toBe(2);
  });

  it('writes an sfdisk script with the labels the initramfs and GRUB look for', () => {
    const script = sfdiskScript(planLayout(2048 * 1024 * 1024, 256));
    expect(script).toMatch(/^label: gpt$/m);
    expect(script).toContain('name="CAIRN-ESP"');
    expect(script).toContain('name="cairn-data"');
  });
});

describe('embedBiosBoot', () => {
  const boot = Buffer.alloc(512, 0xaa);
  // boot.img carries the boot signature itself.
  boot[0x1fe] = 0x55;
  boot[0x1ff] = 0xaa;
  const oldMbr = Buffer.alloc(512);
  // A protective MBR partition entry and the boot signature.
  oldMbr.fill(0x11, 0x1be, 0x1ce);
  oldMbr[0x1fe] = 0x55;
  oldMbr[0x1ff] = 0xaa;
  oldMbr.writeUInt32LE(0xdeadbeef, 0x1b8);
  const core = Buffer.alloc(512 * 3 + 100, 0x42);
  // grub-mkimage's default blocklist: one entry at the end of sector 0.
  core.writeBigUInt64LE(1n, 500);
  core.writeUInt16LE(7, 508);

  it('points boot.img at the core and keeps the disk signature and partition table', () => {
    const { mbr } = embedBiosBoot(boot, core, oldMbr, 2048, 2048);
    expect(mbr.readBigUInt64LE(0x5c)).toBe(2048n);
    expect(mbr[0x64]).toBe(0xff);
    expect([mbr[0x66], mbr[0x67]]).toEqual([0x90, 0x90]);
    expect(mbr.readUInt32LE(0x1b8)).toBe(0xdeadbeef);
    expect(mbr.subarray(0x1be, 0x1fe)).toEqual(oldMbr.subarray(0x1be, 0x1fe));
    expect(mbr.readUInt16LE(0x1fe)).toBe(0xaa55);
    // boot.img's code is otherwise untouched.
    expect(mbr[0x80]).toBe(0xaa);
    // The BIOS parameter block comes from the disk.
    expect(mbr[0x10]).toBe(0);
  });

  it('describes the rest of the core as one run of sectors right after its first', () => {
    const out = embedBiosBoot(boot, core, oldMbr, 2048, 2048).core;
    expect(out.length).toBe(512 * 4);
    expect(out.readBigUInt64LE(500)).toBe(2049n);
    expect(out.readUInt16LE(508)).toBe(3);
    expect(out.readUInt16LE(510)).toBe(0x820);
    // The entry below is the terminator.
    expect(out.subarray(488, 500).every((b) => b === 0)).toBe(true);
    // The padding after the core is zero.
    expect(out.subarray(core.length).every((b) => b === 0)).toBe(true);
  });

  it('refuses a core larger than the BIOS boot partition', () => {
    expect(() => embedBiosBoot(boot, Buffer.alloc(512 * 10), oldMbr, 2048, 4)).toThrow(/needs 10 sectors/);
  });
});

describe('nextCoreSlot', () => {
  const bios = { startSector: 2048, sectors: 2048 };

  it('puts the first core of a disk without GRUB in the first half of the BIOS boot partition', () => {
    expect(nextCoreSlot(Buffer.alloc(512), bios)).toEqual({ startSector: 2048, sectors: 1024 });
  });

  it('puts each new core in the half the MBR does not boot from, so the old core stays whole until the MBR moves', () => {
    const mbr = Buffer.alloc(512);
    const seen: number[] = [];
    for (let i = 0; i < 3; i++) {
      const slot = nextCoreSlot(mbr, bios);
      expect(slot.startSector).not.toBe(coreSectorOf(mbr));
      mbr.writeBigUInt64LE(BigInt(slot.startSector), 0x5c);
      seen.push(slot.startSector);
    }
    expect(seen).toEqual([2048, 3072, 2048]);
  });
});
