/**
 * A GRUB update on a stick. A disk with cairn's layout gets its boot files
 * from the build host's GRUB, as `cairn image build` makes them; then they
 * are remade from another GRUB version out of Debian's archive
 * (grub-pc-bin and grub-efi-amd64-bin, unpacked as their packages install
 * them), as the apt hook and the apk wrapper do after a GRUB package. The
 * disk boots through SeaBIOS and through OVMF (QEMU, software emulation),
 * and GRUB's own banner on the serial console names the version that runs.
 * Needs root, QEMU, OVMF, GRUB, mtools and Debian's archive (or the cache).
 */
import { execa } from 'execa';
import { copyFileSync, readFileSync } from 'node:fs';
import { mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { readBootState } from '../../src/esp/bootState.js';
import { Esp } from '../../src/esp/esp.js';
import { coreSectorOf } from '../../src/grub/biosboot.js';
import { EFI_CORE_PATH, grubVersionOf, makeGrubCore } from '../../src/grub/core.js';
import { stageBootFiles } from '../../src/image/build.js';
import { createDisk, writeEsp, writeImageBiosBoot } from '../../src/image/disk.js';
import type { Layout } from '../../src/image/layout.js';
import { updateGrubBootFiles } from '../../src/packages/grub.js';
import type { SystemTarget } from '../../src/packages/target.js';
import { OVMF } from '../../src/vm/qemu.js';
import { Scratch } from '../helpers/system.js';
import { requireVmHost } from '../helpers/vm-fixtures.js';
import { archiveVersions, cachedDeb, debianCloudKernel, type TestKernel } from '../helpers/vm-kernel.js';
import { GRUB_BANNER, Vm } from '../helpers/vm-qemu.js';

const SECTOR = 512;
let scratch: Scratch;
let kernel: TestKernel;
let disk: string;
let layout: Layout;
let target: SystemTarget;
let hostGrub: string;
let newGrub: string;
let newLib: string;

beforeAll(async () => {
  requireVmHost();
  scratch = new Scratch();
  kernel = await debianCloudKernel();
  hostGrub = (await grubVersionOf('i386-pc')) ?? '';
  expect(hostGrub, 'the build host has GRUB for BIOS (grub-pc-bin)').not.toBe('');
  // Another version of the same packages from Debian's archive: what an upgrade brings.
  newGrub = (await archiveVersions('grub-pc-bin')).find((v) => v !== hostGrub) ?? '';
  expect(newGrub, `Debian's archive offers grub-pc-bin in a version other than ${hostGrub}`).not.toBe('');
  const newRoot = scratch.path('new-grub');
  await mkdir(newRoot);
  for (const pkg of ['grub-pc-bin', 'grub-efi-amd64-bin']) await execa('dpkg-deb', ['-x', await cachedDeb(pkg, newGrub), newRoot]);
  newLib = join(newRoot, 'usr/lib/grub');

  const work = scratch.path('work');
  const espStage = scratch.path('esp');
  const dataStage = scratch.path('data');
  for (const d of [work, espStage, dataStage]) await mkdir(d);
  const { files, biosCore } = await stageBootFiles({
    espStage,
    workDir: work,
    dataStage,
    kernelVersion: kernel.version,
    vmlinuz: kernel.vmlinuz,
    // GRUB loads it; the kernel is stopped before it would unpack one.
    writeInitrd: (output) => writeFile(output, 'no initramfs: the test stops at the kernel banner\n'),
    upper: 'tmpfs',
    primaryConsole: 'serial',
    luks: false,
  });
  disk = scratch.path('stick.img');
  layout = await createDisk(disk, 160 * 1024 * 1024, 96);
  await writeEsp(disk, layout, files, work);
  await writeImageBiosBoot(disk, layout, biosCore);
  target = { dataDir: dataStage, esp: new Esp(disk, layout.esp.startSector * SECTOR), initDir: '' };
}, 600_000);

afterAll(async () => {
  await scratch?.cleanup();
});

/** Boots a copy of the disk and returns the GRUB version its banner names, once the kernel has started. */
async function bootedGrub(firmware: 'bios' | 'uefi', name: string, image = disk): Promise<string> {
  const copy = scratch.path(`${name}.img`);
  copyFileSync(image, copy);
  let uefiVars: string | undefined;
  if (firmware === 'uefi') {
    uefiVars = scratch.path(`${name}.vars.fd`);
    copyFileSync(OVMF.vars, uefiVars);
  }
  const vm = await Vm.start({ name: `grub-update-${name}`, stick: { image: copy, firmware, uefiVars, persist: false, bus: 'virtio' } });
  onTestFailed(() => {
    process.stdout.write(`console of ${name}:\n${vm.output.slice(-4000)}\n`);
  });
  try {
    const banner = await vm.waitFor(GRUB_BANNER, 120_000);
    await vm.waitFor('Loading the kernel and the initramfs', 60_000);
    await vm.waitFor(`Linux version ${kernel.version}`, 120_000);
    return banner[1]!;
  } finally {
    await vm.stop();
  }
}

describe('GRUB update on a stick', () => {
  it('boots the GRUB it was built with through legacy BIOS', async () => {
    expect(await bootedGrub('bios', 'before-bios')).toBe(hostGrub);
  }, 300_000);

  it('writes the new cores beside the old ones, then points the firmware at them', async () => {
    const mbrBefore = await sectors(disk, 0, 1);
    const oldSlot = coreSectorOf(mbrBefore);
    expect(oldSlot).toBe(layout.bios.startSector);
    const oldCore = await sectors(disk, oldSlot, 64);

    const updates = await updateGrubBootFiles(target, { libDir: newLib });
    expect(updates.map((u) => [u.platform, u.previous, u.version]).sort()).toEqual([
      ['i386-pc', hostGrub, newGrub],
      ['x86_64-efi', hostGrub, newGrub],
    ]);

    // BIOS: the MBR names the other half of the BIOS boot partition; the old core is still whole.
    const newSlot = coreSectorOf(await sectors(disk, 0, 1));
    expect(newSlot).toBe(layout.bios.startSector + layout.bios.sectors / 2);
    expect(await sectors(disk, oldSlot, 64)).toEqual(oldCore);
    // EFI: the ESP's core is the one the new GRUB makes, byte for byte.
    const expected = scratch.path('expected.efi');
    await makeGrubCore('x86_64-efi', expected, scratch.path('work'), newLib);
    expect((await target.esp.read(EFI_CORE_PATH))?.equals(readFileSync(expected))).toBe(true);
    // The prompt's modules are the new version's; the record says which GRUB the stick has.
    expect((await target.esp.read('grub/i386-pc/normal.mod'))?.equals(readFileSync(join(newLib, 'i386-pc/normal.mod')))).toBe(true);
    expect(await target.esp.exists('grub/i386-pc.cairn-old')).toBe(false);
    expect((await readBootState(target.esp)).grub).toEqual({ 'x86_64-efi': newGrub, 'i386-pc': newGrub });
    expect(await target.esp.exists('grub/grub.cfg')).toBe(true);

    // Nothing changed, nothing written.
    expect(await updateGrubBootFiles(target, { libDir: newLib })).toEqual([]);
  }, 300_000);

  it('boots the new GRUB through legacy BIOS and through UEFI', async () => {
    expect(await bootedGrub('bios', 'after-bios')).toBe(newGrub);
    expect(await bootedGrub('uefi', 'after-uefi')).toBe(newGrub);
  }, 600_000);

  it('boots the current core when the free slot holds a half-written one (a power cut before the MBR is rewritten)', async () => {
    const cut = scratch.path('cut.img');
    copyFileSync(disk, cut);
    const active = coreSectorOf(await sectors(cut, 0, 1));
    const free = active === layout.bios.startSector ? active + layout.bios.sectors / 2 : layout.bios.startSector;
    const fh = await open(cut, 'r+');
    await fh.write(Buffer.alloc(64 * SECTOR, 0xe5), 0, 64 * SECTOR, free * SECTOR);
    await fh.close();
    expect(await bootedGrub('bios', 'cut-bios', cut)).toBe(newGrub);
  }, 300_000);
});

async function sectors(file: string, start: number, count: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const b = Buffer.alloc(count * SECTOR);
    await fh.read(b, 0, b.length, start * SECTOR);
    return b;
  } finally {
    await fh.close();
  }
}
