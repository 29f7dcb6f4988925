/**
 * The path users take: the default image as the README's first command
 * builds it (`./build-image.sh --output cairn.img --yes`: the debian base,
 * Debian's generic linux-image-amd64 kernel, the screen as the main
 * console, zram), booted by `cairn vm cairn.img` as the README's `--boot`
 * does (a USB stick on an xHCI controller, SeaBIOS, the serial console on
 * its standard input and output) through GRUB to the login prompt, a file
 * written, powered off (the shutdown save), booted again the same way, and
 * the file there.
 *
 * Unattended, the build makes up a password, prints it and keeps it beside
 * the image (root-only): the test logs in with it. The one difference from
 * the README's command is `--cache`, the VM tests' build cache, so the base
 * system debootstrap makes is shared with the other test images (the image
 * is the same).
 */
import { execa } from 'execa';
import { mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { TITLES } from '../../src/grub/menu.js';
import { planLayout } from '../../src/image/layout.js';
import { requireVmHost } from '../helpers/vm-fixtures.js';
import { CLI } from '../helpers/system.js';
import { CACHE } from '../helpers/vm-kernel.js';
import { Vm } from '../helpers/vm-qemu.js';
import { Session } from '../helpers/vm-session.js';

const WORK = join(CACHE, 'usb-stick');
/** The password the build made up. */
let password: string;
const MENU: string[] = [TITLES.default, TITLES.backup, TITLES.clean];
/** What the README's default image is: build-image.sh's defaults. */
const DEFAULT_SIZE_MIB = 4096;

const vms: Vm[] = [];
let image: string;
/** What build-image.sh printed. */
let build: string;

async function boot(name: string): Promise<Session> {
  const vm = await Vm.start({ name: `usb-stick-${name}`, command: [process.execPath, CLI, 'vm', image] });
  vms.push(vm);
  onTestFailed(() => {
    process.stderr.write(`\n----- console of "${name}" (${vm.logFile}) -----\n${vm.output.slice(-20_000)}\n----- end of console -----\n`);
  });
  const s = new Session(vm);
  await s.pickEntry(MENU, 0);
  // It says how it runs the guest, and that what the guest saves stays.
  expect(vm.stderr).toMatch(/cairn vm: .* as a USB stick, BIOS, (KVM|software emulation)/);
  expect(vm.stderr).toContain('what the guest saves stays in the image');
  expect(vm.stderr).toContain('network through QEMU\'s user-mode NAT');
  await s.login('root', password);
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
    rmSync(`${image}.password`, { force: true });
    const r = await execa(resolve('build-image.sh'), ['--output', image, '--yes', '--cache', join(CACHE, 'build')], { reject: false, all: true, stdin: 'ignore' });
    if (r.exitCode !== 0) throw new Error(`./build-image.sh --output ${image} --yes failed:\n${r.all}`);
    build = r.all ?? '';
    password = readFileSync(`${image}.password`, 'utf8').trim();
  }, 1800_000);

  afterAll(async () => {
    for (const vm of vms) await vm.stop();
  });

  it('an unattended build makes up a password, prints it at the end and keeps it beside the image for root only', () => {
    expect(password).toMatch(/^[A-Za-z0-9_-]{12}$/);
    expect(build).toContain(`log in as cairn or root with the password ${password} (kept in ${image}.password, readable by root only)`);
    expect(statSync(`${image}.password`).mode & 0o777).toBe(0o600);
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
    // cairn vm's user-mode network: the image's ifupdown took the card by DHCP, whatever its name.
    expect(await s.ok('for i in $(seq 60); do ip -4 -o addr show scope global | grep -q "inet 10\\.0\\.2\\." && break; sleep 1; done; ip -4 -o addr show scope global')).toMatch(/inet 10\.0\.2\.\d+\//);
    await s.ok('echo "kept on the stick" > /root/usb-file');
    // The image's main console is the screen; the save still shows on the serial port `cairn vm` shows.
    const shutdown = await s.powerOff();
    expect(shutdown).toMatch(/cairn-save: Saving this session to the stick/);
    expect(shutdown).toMatch(/saved [\d.]+ \w+ \(\d+ files/);
    expect(shutdown).toMatch(/cairn-save: saved\n/);

    const again = await boot('2');
    expect(await again.ok('cat /root/usb-file')).toBe('kept on the stick');
    expect(await again.ok('cairn status')).toMatch(/booted: default/);
    await again.powerOff();
  }, 1500_000);
});
