/**
 * A user's day with cairn, end to end: the debian image built by `cairn image
 * build`, booted in QEMU through the firmware and GRUB (entries picked over
 * the serial console), logged into, changed, powered off (the shutdown save
 * runs), and booted again. One image, one boot per step, in order.
 *
 * Packages come from a local repository signed with a key made for the
 * test (test/helpers/apt-repo.ts), on a second disk given to the VM, so the
 * test does not depend on a mirror: Debian's `hello` for step 2, and for the
 * system update of step 8 a newer linux-image than the image's own and the
 * archive's other GRUB version (the image's boot files come from the build
 * machine's GRUB).
 */
import { execa } from 'execa';
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readdirSync, readSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grubVersionOf } from '../../src/grub/core.js';
import { TITLES } from '../../src/grub/menu.js';
import { planLayout } from '../../src/image/layout.js';
import { escapeRegExp } from '../../src/lib/format.js';
import { OVMF } from '../../src/vm/qemu.js';
import { makeAptRepo, sourcesLine } from '../helpers/apt-repo.js';
import { CLI, requireSystem } from '../helpers/system.js';
import { archiveVersions, cloudKernelDeb, debsToInstall } from '../helpers/vm-kernel.js';
import { GRUB_BANNER, Vm } from '../helpers/vm-qemu.js';
import { Session } from '../helpers/vm-session.js';

const CACHE = process.env.CAIRN_TEST_CACHE ?? '/var/cache/cairn-test';
const WORK = join(CACHE, 'stick');
const SIZE_MIB = 2048;
const PASSWORD = 'cairn-test';
const MENU: string[] = [TITLES.default, TITLES.backup, TITLES.clean];
const ENTRY = { default: 0, backup: 1, clean: 2 } as const;

const vms: Vm[] = [];

let repoDisk: string;
/** A booted session one step leaves for the next. */
let running: Session | undefined;
let update: { pkg: string; version: string };
/** The GRUB packages of step 8, at a version other than the one that made the image's boot files. */
let grub: { version: string; packages: string[] };

async function boot(name: string, image: string, entry: keyof typeof ENTRY, firmware: 'bios' | 'uefi' = 'bios', menu = MENU) {
  let uefiVars: string | undefined;
  if (firmware === 'uefi') {
    uefiVars = join(WORK, `${name}.vars.fd`);
    copyFileSync(OVMF.vars, uefiVars);
  }
  const vm = await Vm.start({
    name: `stick-${name}`,
    stick: { image, firmware, uefiVars, persist: true, bus: 'virtio' },
    memoryMiB: 1024,
    disks: [repoDisk],
  });
  vms.push(vm);
  const s = new Session(vm);
  await s.pickEntry(menu, ENTRY[entry]);
  await s.login('root', PASSWORD);
  return s;
}

const UPPER = '/run/cairn/rw/upper';

/** The version GRUB's banner named on this boot's console. */
function bannerVersion(s: Session): string | undefined {
  return GRUB_BANNER.exec(s.vm.output)?.[1];
}

/** The test's package repository (the VM's second disk) as apt's only source. */
async function useRepo(s: Session): Promise<void> {
  await s.ok(`mkdir -p /mnt/repo && mount -o ro /dev/vdb /mnt/repo && echo '${sourcesLine('/mnt/repo')}' > /etc/apt/sources.list`);
  await s.ok('apt-get update -q', 600_000);
}

/** Flips one byte in the middle of a state's squashfs part (not its seal), from the host. */
async function corruptOnImage(image: string, file: string): Promise<void> {
  const layout = planLayout(SIZE_MIB * 1024 * 1024, 256);
  const mnt = join(WORK, 'mnt');
  mkdirSync(mnt, { recursive: true });
  await execa('mount', ['-o', `loop,offset=${layout.data.startSector * 512}`, image, mnt]);
  try {
    const path = join(mnt, file);
    const at = Math.floor((statSync(path).size - 4096) / 2);
    const fd = openSync(path, 'r+');
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ 0xff;
    writeSync(fd, b, 0, 1, at);
    closeSync(fd);
  } finally {
    await execa('umount', [mnt]);
  }
}

describe.sequential('a user\'s day with a cairn stick (debian image, QEMU)', () => {
  let image: string;

  beforeAll(async () => {
    requireSystem(['mksquashfs', 'mkfs.ext4', 'losetup']);
    if (!existsSync('/usr/bin/qemu-system-x86_64')) throw new Error('the stick test needs QEMU: apt-get install qemu-system-x86');
    for (const tool of ['debootstrap', 'mkfs.vfat', 'mcopy', 'sfdisk', 'grub-mkimage']) {
      const r = await execa('sh', ['-c', `command -v ${tool}`], { reject: false });
      if (r.exitCode !== 0) throw new Error(`the stick test needs ${tool} (see .ci/run)`);
    }
    mkdirSync(WORK, { recursive: true });
    image = join(WORK, 'cairn.img');
    const built = join(WORK, 'built.img');
    const buildWork = join(WORK, 'build-work');
    const r = await execa(
      process.execPath,
      [CLI, 'image', 'build', '--output', built, '--size', String(SIZE_MIB), '--kernel', 'linux-image-cloud-amd64',
        '--password', PASSWORD, '--console', 'serial', '--swap', '0', '--cache', join(CACHE, 'build'), '--work', buildWork],
      { reject: false },
    );
    if (r.exitCode !== 0) throw new Error(`cairn image build failed: ${r.stderr}`);
    copyFileSync(built, image);

    const debs = join(WORK, 'debs');
    rmSync(debs, { recursive: true, force: true });
    mkdirSync(debs);
    await execa('apt-get', ['download', 'hello'], { cwd: debs });
    const kernel = await cloudKernelDeb();
    update = kernel;
    const imageGrub = await grubVersionOf('i386-pc');
    const version = (await archiveVersions('grub-pc-bin')).find((v) => v !== imageGrub);
    if (!imageGrub || !version) throw new Error(`the archive offers no GRUB other than the build machine's ${imageGrub}: no GRUB update to test`);
    const packages = ['grub-common', 'grub-pc-bin', 'grub-efi-amd64-bin'].map((p) => `${p}=${version}`);
    grub = { version, packages };
    // Dependencies as apt resolves them against the image's own root.
    const grubDebs = await debsToInstall(join(buildWork, 'root'), packages);
    const repo = join(WORK, 'repo');
    rmSync(repo, { recursive: true, force: true });
    await makeAptRepo(repo, [kernel.deb, join(debs, readdirSync(debs).find((f) => f.startsWith('hello_'))!), ...grubDebs]);
    repoDisk = join(WORK, 'repo.img');
    rmSync(repoDisk, { force: true });
    await execa('mke2fs', ['-q', '-t', 'ext4', '-d', repo, repoDisk, '128M']);
  }, 1800_000);

  afterAll(async () => {
    for (const vm of vms) await vm.stop();
    rmSync(join(WORK, 'mnt'), { recursive: true, force: true });
  });

  it('1. first boot, default entry: the system comes up with nothing saved yet', async () => {
    const s = await boot('1-first', image, 'default');
    const status = await s.ok('cairn status');
    expect(status).toMatch(/booted: default, nothing saved yet/);
    expect(status).toMatch(/none yet/);
    // 2. changes everywhere a user makes them, and a base file deleted
    await s.ok('echo etc-change > /etc/cairn-test.conf && echo root-change > /root/notes && mkdir -p /var/lib/cairn-test && echo var-change > /var/lib/cairn-test/data');
    await s.ok('su - cairn -c "echo home-change > ~/hello.txt"');
    await s.ok('rm /etc/issue.net');
    await useRepo(s);
    await s.ok('apt-get install -y -q hello', 600_000);
    expect(await s.ok('hello')).toBe('Hello, world!');
    const shutdown = await s.powerOff();
    expect(shutdown).toMatch(/Saving this session to the stick/);
    expect(shutdown).toMatch(/saved [\d.]+ \w+ \(\d+ files/);
  }, 900_000);

  it('3. default boot: every change is there and the deleted file stays deleted', async () => {
    const s = await boot('3-default', image, 'default');
    expect(await s.ok('cat /etc/cairn-test.conf /root/notes /var/lib/cairn-test/data /home/cairn/hello.txt')).toBe(
      'etc-change\nroot-change\nvar-change\nhome-change',
    );
    expect((await s.run('test -e /etc/issue.net')).code).toBe(1);
    expect(await s.ok('hello')).toBe('Hello, world!');
    expect(await s.ok('dpkg-query -W -f \'${Status}\' hello')).toBe('install ok installed');
    expect(await s.ok('cairn status')).toMatch(/booted: default/);
    await s.ok('echo step-3 > /root/step3');
    expect(await s.powerOff()).toMatch(/Saving this session to the stick/);
  }, 900_000);

  it('4. backup entry: the state from before step 3 is there, step 3\'s change is not', async () => {
    const s = await boot('4-backup', image, 'backup');
    expect(await s.ok('cat /root/notes')).toBe('root-change');
    expect((await s.run('test -e /root/step3')).code).toBe(1);
    expect(await s.ok('cairn status')).toMatch(/booted: backup/);
    await s.powerOff();
  }, 900_000);

  it('5. clean entry: nothing saved is there, and powering off saves nothing', async () => {
    const s = await boot('5-clean', image, 'clean');
    expect((await s.run('test -e /root/notes')).code).toBe(1);
    expect(await s.ok('cairn status')).toMatch(/booted: clean/);
    await s.ok('echo clean > /root/clean-session');
    expect(await s.powerOff()).toMatch(/booted clean: nothing is saved/);
    const after = await boot('5-default-after-clean', image, 'default');
    expect((await after.run('test -e /root/clean-session')).code).toBe(1);
    expect(await after.ok('cat /root/notes')).toBe('root-change');
    await after.powerOff();
  }, 1200_000);

  it('6. a corrupt upperfs.squashfs: the default boot falls back to the backup, says so, and runs', async () => {
    await corruptOnImage(image, 'upperfs.squashfs');
    const s = await boot('6-corrupt', image, 'default');
    expect(s.vm.output).toMatch(/upperfs\.squashfs fails its checksum \(sha256 mismatch\); booting the backup/);
    expect(await s.ok('cairn status')).toMatch(/booted: backup \(asked for default\)/);
    await s.powerOff();
  }, 900_000);

  it('7. QEMU killed in the middle of the shutdown save: the next boot finds a valid state', async () => {
    const s = await boot('7-killed', image, 'default');
    await s.ok('dd if=/dev/urandom of=/root/big bs=1M count=64 status=none');
    s.vm.send('poweroff\r');
    await s.vm.waitFor('Saving this session to the stick', 300_000);
    await s.vm.stop();
    const again = await boot('7-after-kill', image, 'default');
    const status = await again.ok('cairn status');
    expect(status).toMatch(/next default boot: (default|backup)/);
    expect(status).not.toMatch(/default\s+upperfs\.squashfs.*DAMAGED/);
    // Step 8 starts in this boot: one boot fewer in a test of many.
    running = again;
  }, 1200_000);

  it('8. a system update through apt (a new kernel, a new GRUB): a power cut during it leaves a stick that boots; then the new kernel boots through the new GRUB under BIOS and UEFI, the menu keeps the old kernel, and the upper layer holds none of their boot files', async () => {
    const s = running ?? (await boot('8-update-cut', image, 'default'));
    running = undefined;
    const old = await s.ok('uname -r');
    expect(old).not.toBe(update.version);
    await useRepo(s);
    s.vm.send(`apt-get install -y -q ${update.pkg}\r`);
    await s.vm.waitFor(`cairn: ${update.pkg}: kernel ${update.version}: modules image, initramfs and ESP files`, 600_000);
    // The power cut: in the middle of writing the modules image and the initramfs.
    await new Promise((r) => setTimeout(r, 5000));
    await s.vm.stop();

    const after = await boot('8-after-cut', image, 'default');
    expect(await after.ok('uname -r')).toBe(old);
    await useRepo(after);
    // One transaction, as an upgrade brings them.
    const install = await after.ok(`apt-get install -y -q --no-install-recommends ${update.pkg} ${grub.packages.join(' ')} 2>&1`, 1800_000);
    expect(install).toContain(`cairn: ${update.pkg}: ${update.version} boots by default; ${old} stays in the menu`);
    expect(install).toMatch(new RegExp(`cairn: GRUB i386-pc ${escapeRegExp(grub.version)}: boot files written to /dev/vda sectors \\d+-\\d+ \\(BIOS boot partition\\)`));
    expect(install).toContain(`cairn: GRUB x86_64-efi ${grub.version}: boot files written to /EFI/BOOT/BOOTX64.EFI on the ESP`);
    expect(await after.ok(`dpkg-query -W -f '\${Status}' ${update.pkg}`)).toBe('install ok installed');
    expect(await after.ok(`dpkg-query -W -f '\${Version}' grub-pc-bin grub-efi-amd64-bin`)).toBe(`${grub.version}${grub.version}`);
    expect(await after.ok(`find ${UPPER} -path '*/modules/${update.version}*' -o -name '*.ko*' -o -name 'vmlinuz*' -o -path '${UPPER}/boot/grub*' | wc -l`)).toBe('0');
    const status = await after.ok('cairn status');
    expect(status).toContain(`kernel booted by default: ${update.version} (the menu keeps ${old} until it has booted)`);
    expect(status.split('\n').find((l) => l.startsWith('modules images:'))).toContain(update.version);
    expect(status).toContain(`i386-pc ${grub.version}`);
    expect(status).toContain(`x86_64-efi ${grub.version}`);
    await after.powerOff();

    const updated = await boot('8-new-kernel', image, 'default', 'bios', [...MENU, TITLES.previousKernel(old)]);
    expect(bannerVersion(updated)).toBe(grub.version);
    expect(updated.vm.output).toContain(TITLES.previousKernel(old));
    expect(await updated.ok('uname -r')).toBe(update.version);
    expect(await updated.ok(`find ${UPPER} -name '*.ko*' | wc -l`)).toBe('0');
    expect(await updated.ok(`ls /lib/modules/${update.version}/kernel/drivers/block`)).toContain('virtio_blk.ko');
    // This boot of the new kernel confirmed it: the old one is gone from the stick.
    const confirmed = await updated.ok('cairn status');
    expect(confirmed).toContain(`kernel booted by default: ${update.version}\n`);
    expect(confirmed).toContain(`kernels on the ESP: ${update.version}\n`);
    await updated.powerOff();

    const uefi = await boot('8-new-grub-uefi', image, 'default', 'uefi');
    expect(bannerVersion(uefi)).toBe(grub.version);
    expect(await uefi.ok('uname -r')).toBe(update.version);
    await uefi.powerOff();
  }, 3600_000);

  it('1-3 under UEFI: boots through OVMF and GRUB, saves, and the change is there on the next boot', async () => {
    const uefiImage = join(WORK, 'uefi.img');
    copyFileSync(join(WORK, 'built.img'), uefiImage);
    const s = await boot('uefi-1', uefiImage, 'default', 'uefi');
    expect(await s.ok('cairn status')).toMatch(/nothing saved yet/);
    await s.ok('echo uefi > /root/uefi');
    expect(await s.powerOff()).toMatch(/Saving this session to the stick/);
    const again = await boot('uefi-2', uefiImage, 'default', 'uefi');
    expect(await again.ok('cat /root/uefi')).toBe('uefi');
    await again.powerOff();
  }, 1800_000);
});
