/**
 * The path users take: the default image as the README's first command
 * builds it (`./build-image.sh --output cairn.img --yes`: the debian base,
 * Debian's generic linux-image-amd64 kernel, the screen as the main
 * console, zram), attached to QEMU as a USB stick on an xHCI controller the
 * way `cairn vm` attaches it (src/vm/qemu.ts), booted through SeaBIOS and
 * GRUB to the login prompt on the serial port, a file written, powered off
 * (the shutdown save), booted again, and the file there.
 *
 * Two differences from the README's command: `--password`, since without it
 * an unattended build locks root and the user and nobody could log in; and
 * `--cache`, the VM tests' build cache, so the base system debootstrap
 * makes is shared with the other test images (the image is the same).
 */
import { execa } from 'execa';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { TITLES } from '../../src/grub/menu.js';
import { planLayout } from '../../src/image/layout.js';
import { requireVmHost } from '../helpers/vm-fixtures.js';
import { CACHE } from '../helpers/vm-kernel.js';
import { Vm } from '../helpers/vm-qemu.js';
import { Session } from '../helpers/vm-session.js';

const WORK = join(CACHE, 'usb-stick');
const PASSWORD = 'cairn-test';
const MENU: string[] = [TITLES.default, TITLES.backup, TITLES.clean];
/** What the README's default image is: build-image.sh's defaults. */
const DEFAULT_SIZE_MIB = 4096;

const vms: Vm[] = [];
let image: string;

async function boot(name: string): Promise<Session> {
  const vm = await Vm.start({ name: `usb-stick-${name}`, stick: { image, firmware: 'bios', persist: true, bus: 'usb' }, memoryMiB: 1024 });
  vms.push(vm);
  onTestFailed(() => {
    process.stderr.write(`\n----- console of "${name}" (${vm.logFile}) -----\n${vm.output.slice(-20_000)}\n----- end of console -----\n`);
  });
  const s = new Session(vm);
  await s.pickEntry(MENU, 0);
  await s.login('root', PASSWORD);
  return s;
}

/** The names of the files in the ESP's initramfs, read on the host (mtools, gzip, cpio). */
async function initramfsFiles(): Promise<string[]> {
  const layout = planLayout(DEFAULT_SIZE_MIB * 1024 * 1024, 256);
  const esp = `${image}@@${layout.esp.startSector * 512}`;
  const listing = await execa('mdir', ['-b', '-i', esp, '::/'], { env: { MTOOLS_SKIP_CHECK: '1' } });
  const initrd = listing.stdout.split('\n').map((l) => l.trim().replace(/^::\//, '')).find((f) => /^initramfs-.*amd64/.test(f) && !/cloud/.test(f));
  if (!initrd) throw new Error(`no initramfs of the generic kernel on the ESP: ${listing.stdout}`);
  const r = await execa('sh', ['-c', `mtype -i '${esp}' '::/${initrd}' | gzip -dc | cpio -it --quiet`], { env: { MTOOLS_SKIP_CHECK: '1' } });
  return r.stdout.split('\n');
}

describe.sequential('the README\'s default image on a USB stick (generic kernel, xHCI, usb-storage, SeaBIOS, GRUB)', () => {
  beforeAll(async () => {
    requireVmHost();
    mkdirSync(WORK, { recursive: true });
    image = join(WORK, 'cairn.img');
    rmSync(image, { force: true });
    const r = await execa(resolve('build-image.sh'), ['--output', image, '--yes', '--password', PASSWORD, '--cache', join(CACHE, 'build')], { reject: false, all: true, stdin: 'ignore' });
    if (r.exitCode !== 0) throw new Error(`./build-image.sh --output ${image} --yes failed:\n${r.all}`);
  }, 1800_000);

  afterAll(async () => {
    for (const vm of vms) await vm.stop();
  });

  it('the initramfs on the ESP carries the USB drivers: xHCI, usb-storage and uas', async () => {
    const files = await initramfsFiles();
    for (const mod of ['xhci-hcd.ko', 'xhci-pci.ko', 'usb-storage.ko', 'uas.ko']) {
      expect(files.some((f) => f.endsWith(`/${mod}`) || f.endsWith(`/${mod}.xz`) || f.endsWith(`/${mod}.zst`)), `${mod} in the initramfs`).toBe(true);
    }
  });

  it('boots from the USB stick to the login prompt with the generic kernel; a file written is there after a power-off and a second boot', async () => {
    const s = await boot('1');
    const kernel = await s.ok('uname -r');
    expect(kernel).toMatch(/^\d+\.\d+\.\d+-\d+-amd64$/);
    // The data partition is on the USB stick, behind the xHCI controller.
    const persist = await s.ok('findmnt -n -o SOURCE /persist');
    expect(persist).toMatch(/^\/dev\/sd[a-z]2$/);
    const disk = persist.replace(/^\/dev\/|2$/g, '');
    expect(await s.ok(`lsblk -dno TRAN /dev/${disk}`)).toBe('usb');
    expect(await s.ok(`readlink -f /sys/block/${disk}`)).toMatch(/\/usb\d+\//);
    expect(await s.ok('cat /sys/module/xhci_hcd/initstate /sys/module/usb_storage/initstate')).toBe('live\nlive');
    // The firmware the kernel's loader reads comes from the stick's firmware image.
    expect(await s.ok('findmnt -n -o FSTYPE /lib/firmware')).toBe('squashfs');
    expect(await s.ok('cairn status')).toMatch(/nothing saved yet/);
    await s.ok('echo "kept on the stick" > /root/usb-file');
    await s.powerOff();

    const again = await boot('2');
    expect(await again.ok('cat /root/usb-file')).toBe('kept on the stick');
    expect(await again.ok('cairn status')).toMatch(/booted: default/);
    await again.powerOff();
  }, 1500_000);
});
