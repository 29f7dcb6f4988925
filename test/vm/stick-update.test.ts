/**
 * The second half of a user's day (test/vm/stick.test.ts has the first), on
 * its own copy of the same built image (test/helpers/vm-stick.ts) so the two
 * halves run side by side: a system update through apt (a newer kernel and
 * the archive's other GRUB version) with a power cut in the middle of it,
 * then the update to the end in a session booted through OVMF (UEFI) and
 * GRUB, the stick's first save, made under UEFI; the new kernel boots
 * through the new GRUB under legacy BIOS and under UEFI, and the file the
 * UEFI session saved is there in both.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TITLES } from '../../src/grub/menu.js';
import { escapeRegExp } from '../../src/lib/format.js';
import { CACHE } from '../helpers/vm-kernel.js';
import { bannerVersion, MENU, prepareStick, UPPER, useRepo, type StickBoots, type StickFixture } from '../helpers/vm-stick.js';

const WORK = join(CACHE, 'stick-update');

let boots: StickBoots;
let fixture: StickFixture;
let image: string;

describe.sequential('a user\'s day, continued: a system update, and UEFI (debian image, QEMU)', () => {
  beforeAll(async () => {
    ({ fixture, image, boots } = await prepareStick(WORK, 'stick-update'));
  }, 1800_000);

  afterAll(async () => {
    await boots?.stopAll();
  });

  /** The kernel the image was built with. */
  let old: string;

  it('8a. a system update through apt (a new kernel) cut by a power failure in the middle', async () => {
    const s = await boots.boot('8-update-cut', image, 'default');
    old = await s.ok('uname -r');
    expect(old).not.toBe(fixture.update.version);
    await useRepo(s);
    s.vm.send(`apt-get install -y -q ${fixture.update.pkg}\r`);
    await s.vm.waitFor(`cairn: ${fixture.update.pkg}: kernel ${fixture.update.version}: modules image, initramfs and ESP files`, 600_000);
    // The power cut: in the middle of writing the modules image and the initramfs.
    await new Promise((r) => setTimeout(r, 5000));
    await s.vm.stop();
  }, 1200_000);

  it('8b. after the cut the stick boots the old kernel (here through OVMF and GRUB); the update in one apt transaction (kernel and GRUB) writes no boot file into the upper layer, and the session, the first of the stick, saves at power-off under UEFI', async () => {
    const after = await boots.boot('8-after-cut', image, 'default', 'uefi');
    expect(await after.ok('uname -r')).toBe(old);
    expect(await after.ok('cairn status')).toMatch(/nothing saved yet/);
    await after.ok('echo uefi > /root/uefi');
    await useRepo(after);
    // One transaction, as an upgrade brings them.
    const install = await after.ok(`apt-get install -y -q --no-install-recommends ${fixture.update.pkg} ${fixture.grub.packages.join(' ')} 2>&1`, 1800_000);
    expect(install).toContain(`cairn: ${fixture.update.pkg}: ${fixture.update.version} boots by default; ${old} stays in the menu`);
    expect(install).toMatch(new RegExp(`cairn: GRUB i386-pc ${escapeRegExp(fixture.grub.version)}: boot files written to /dev/vda sectors \\d+-\\d+ \\(BIOS boot partition\\)`));
    expect(install).toContain(`cairn: GRUB x86_64-efi ${fixture.grub.version}: boot files written to /EFI/BOOT/BOOTX64.EFI on the ESP`);
    expect(await after.ok(`dpkg-query -W -f '\${Status}' ${fixture.update.pkg}`)).toBe('install ok installed');
    expect(await after.ok(`dpkg-query -W -f '\${Version}' grub-pc-bin grub-efi-amd64-bin`)).toBe(`${fixture.grub.version}${fixture.grub.version}`);
    expect(await after.ok(`find ${UPPER} -path '*/modules/${fixture.update.version}*' -o -name '*.ko*' -o -name 'vmlinuz*' -o -path '${UPPER}/boot/grub*' | wc -l`)).toBe('0');
    const status = await after.ok('cairn status');
    expect(status).toContain(`kernel booted by default: ${fixture.update.version} (the menu keeps ${old} until it is confirmed)`);
    expect(status.split('\n').find((l) => l.startsWith('modules images:'))).toContain(fixture.update.version);
    expect(status).toContain(`i386-pc ${fixture.grub.version}`);
    expect(status).toContain(`x86_64-efi ${fixture.grub.version}`);
    expect(await after.powerOff()).toMatch(/Saving this session to the stick/);
  }, 1800_000);

  it('8c. the new kernel boots through the new GRUB under BIOS (the menu keeps the old kernel until then) and under UEFI, with the session saved under UEFI there', async () => {
    const updated = await boots.boot('8-new-kernel', image, 'default', 'bios', [...MENU, TITLES.previousKernel(old)]);
    expect(bannerVersion(updated)).toBe(fixture.grub.version);
    expect(updated.vm.output).toContain(TITLES.previousKernel(old));
    expect(await updated.ok('uname -r')).toBe(fixture.update.version);
    expect(await updated.ok('cat /root/uefi')).toBe('uefi');
    expect(await updated.ok(`find ${UPPER} -name '*.ko*' | wc -l`)).toBe('0');
    expect(await updated.ok(`ls /lib/modules/${fixture.update.version}/kernel/drivers/block`)).toContain('virtio_blk.ko');
    // This boot of the new kernel confirmed it: the old one is gone from the stick.
    const confirmed = await updated.ok('cairn status');
    expect(confirmed).toContain(`kernel booted by default: ${fixture.update.version}\n`);
    expect(confirmed).toContain(`kernels on the ESP: ${fixture.update.version}\n`);
    await updated.powerOff();

    const uefi = await boots.boot('8-new-grub-uefi', image, 'default', 'uefi');
    expect(bannerVersion(uefi)).toBe(fixture.grub.version);
    expect(await uefi.ok('uname -r')).toBe(fixture.update.version);
    // Saved under UEFI, kept through the save since.
    expect(await uefi.ok('cat /root/uefi')).toBe('uefi');
    // The last boot of the stick: its save at power-off would show nothing 8b's did not.
    await uefi.vm.stop();
  }, 1800_000);
});
