/**
 * An encrypted stick, end to end: the debian image built by `cairn image
 * build --encrypt`, booted in QEMU through SeaBIOS and GRUB; the initramfs
 * asks for the passphrase on the serial console, refuses a wrong one and
 * unlocks with the right one; a file written in the session is saved at
 * power-off, and the saved state on the stick holds it, read from the host
 * with the passphrase (test/helpers/luks-read.ts). A second boot would
 * unlock the same way through the same initramfs: the host read costs
 * seconds where a boot under emulation costs minutes.
 *
 * The image is booted as a larger stick (a copy grown as `cairn vm
 * --disk-size` grows it): the boot grows the partition before it asks for
 * the passphrase, so the LUKS mapping covers the grown partition, and the
 * ext4 inside once it is mounted.
 *
 * The image's key derivation is argon2id with 200 ms on the build machine
 * instead of the 2 s a built stick gets: under software emulation each try
 * costs many times that.
 */
import { execa } from 'execa';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TITLES } from '../../src/grub/menu.js';
import { DATA } from '../../src/names.js';
import { grownCopy } from '../../src/vm/diskSize.js';
import { decryptPayload, extractHeader, volumeKey } from '../helpers/luks-read.js';
import { CLI, requireSystem } from '../helpers/system.js';
import { Vm } from '../helpers/vm-qemu.js';
import { Session } from '../helpers/vm-session.js';

const CACHE = process.env.CAIRN_TEST_CACHE ?? '/var/cache/cairn-test';
const WORK = join(CACHE, 'luks-stick');
const PASSWORD = 'cairn-test';
const PASSPHRASE = 'correct horse battery';
const SIZE_MIB = 1024;
/** The stick the image is written to. */
const STICK = '1536M';
const MENU: string[] = [TITLES.default, TITLES.backup, TITLES.clean];

const vms: Vm[] = [];
const timings: string[] = [];
let image: string;

async function bootToPrompt(name: string): Promise<{ vm: Vm; s: Session }> {
  const vm = await Vm.start({ name: `luks-stick-${name}`, stick: { image, firmware: 'bios', persist: true, bus: 'virtio' }, memoryMiB: 1024 });
  vms.push(vm);
  const s = new Session(vm);
  await s.pickEntry(MENU, 0);
  if (name === 'first') await vm.waitFor(/cairn: the data partition \/dev\/vda2 now fills \/dev\/vda: 76\d MiB -> 127\d MiB/, 180_000);
  await vm.waitFor(/cairn: \/dev\/vda2 is encrypted \(LUKS\)/, 180_000);
  await vm.waitFor('Passphrase for /dev/vda2 (1 of 3): ', 30_000);
  timings.push(`  ${name}: passphrase asked at ${vm.seconds()} s`);
  return { vm, s };
}

async function unlock(vm: Vm, name: string): Promise<void> {
  await vm.waitFor('cairn: unlocked /dev/vda2 as /dev/mapper/cairn-data', 120_000);
  timings.push(`  ${name}: unlocked at ${vm.seconds()} s`);
}

describe.sequential('an encrypted cairn stick (debian image, QEMU, BIOS)', () => {
  beforeAll(async () => {
    requireSystem(['mksquashfs', 'mkfs.ext4', 'cryptsetup']);
    if (!existsSync('/usr/bin/qemu-system-x86_64')) throw new Error('the encrypted stick test needs QEMU: apt-get install qemu-system-x86');
    for (const tool of ['debootstrap', 'mkfs.vfat', 'mcopy', 'sfdisk', 'grub-mkimage']) {
      const r = await execa('sh', ['-c', `command -v ${tool}`], { reject: false });
      if (r.exitCode !== 0) throw new Error(`the encrypted stick test needs ${tool} (see .ci/run)`);
    }
    mkdirSync(WORK, { recursive: true });
    image = join(WORK, 'cairn.img');
    const started = Date.now();
    const r = await execa(
      process.execPath,
      [CLI, 'image', 'build', '--output', image, '--size', String(SIZE_MIB), '--kernel', 'linux-image-cloud-amd64',
        '--password', PASSWORD, '--console', 'serial', '--swap', '0', '--cache', join(CACHE, 'build'), '--work', join(WORK, 'work'),
        '--encrypt', '--passphrase-file', '-', '--luks-iter-time', '200'],
      { reject: false, input: `${PASSPHRASE}\n` },
    );
    if (r.exitCode !== 0) throw new Error(`cairn image build --encrypt failed: ${r.stderr}`);
    timings.push(`  image built in ${Math.round((Date.now() - started) / 1000)} s`);
    rmSync(join(WORK, `cairn-${STICK}.img`), { force: true });
    image = (await grownCopy(image, STICK)).path;
  }, 1800_000);

  afterAll(async () => {
    for (const vm of vms) await vm.stop();
    writeFileSync(join(WORK, 'timings.txt'), `${timings.join('\n')}\n`);
    process.stdout.write(`encrypted stick:\n${timings.join('\n')}\n`);
  });

  it('refuses a wrong passphrase, unlocks with the right one, and saves the session at power-off', async () => {
    const { vm, s } = await bootToPrompt('first');
    try {
      vm.send('not the passphrase\r');
      await vm.waitFor('cairn: warning: wrong passphrase for /dev/vda2', 120_000);
      await vm.waitFor('Passphrase for /dev/vda2 (2 of 3): ', 30_000);
      vm.send(`${PASSPHRASE}\r`);
      await unlock(vm, 'first');
      await s.login('root', PASSWORD);
      expect(await s.ok("awk '$2 == \"/persist\" { print $1 }' /proc/mounts")).toBe('/dev/mapper/cairn-data');
      // The ext4 inside the LUKS volume grew to fill the grown partition.
      expect(vm.output).toMatch(/cairn: the file system on \/dev\/mapper\/cairn-data now fills it: 126\d MiB/);
      expect(Number(await s.ok("df -k /persist | awk 'NR == 2 { print $2 }'"))).toBeGreaterThan(1150 * 1024);
      expect(await s.ok('cairn status')).toMatch(/booted: default, nothing saved yet/);
      await s.ok('echo written-while-encrypted > /root/secret.txt');
      const shutdown = await s.powerOff();
      timings.push(`  first: powered off at ${vm.seconds()} s`);
      expect(shutdown).toMatch(/Saving this session to the stick/);
      expect(shutdown).toMatch(/saved [\d.]+ \w+ \(\d+ files/);
      // Neither passphrase was echoed: echo is off before each prompt shows.
      expect(vm.output).not.toContain(PASSPHRASE);
      expect(vm.output).not.toContain('not the passphrase');
    } finally {
      await vm.stop();
    }
  }, 900_000);

  it('the saved state on the stick holds the session\'s file: read from the host with the passphrase', async () => {
    // The grown partition, as the stick's table now says.
    const table = JSON.parse((await execa('sfdisk', ['--json', image], { env: { LC_ALL: 'C' } })).stdout).partitiontable;
    const data = (table.partitions as Array<{ node: string; start: number; size: number }>).find((p) => p.node.endsWith('2'))!;
    expect(data.start + data.size - 1).toBe(table.lastlba);
    const header = join(WORK, 'header');
    await extractHeader(image, data.start * 512, header);
    const ext4 = join(WORK, 'data.ext4');
    try {
      await decryptPayload(image, data.start * 512, data.size * 512, await volumeKey(header, PASSPHRASE), ext4);
      const state = join(WORK, 'upperfs.squashfs');
      await execa('debugfs', ['-R', `dump /${DATA.newest} ${state}`, ext4]);
      expect((await execa('unsquashfs', ['-cat', state, 'root/secret.txt'])).stdout).toBe('written-while-encrypted');
      const verify = await execa(process.execPath, [CLI, 'verify', state], { reject: false });
      expect(verify.exitCode, verify.stderr).toBe(0);
    } finally {
      for (const f of [ext4, header, join(WORK, 'upperfs.squashfs')]) rmSync(f, { force: true });
    }
  });
});
