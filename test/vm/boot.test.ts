/**
 * The early boot on a real kernel: Debian's cloud kernel and an initramfs
 * built by `cairn initramfs build`, booted directly in QEMU (software
 * emulation) with an ext4 data disk on virtio holding a base system and two
 * states saved by the real `cairn save`. One boot per case; the guest's init
 * reports what it sees over the serial console and powers off.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { DATA } from '../../src/names.js';
import { Scratch } from '../helpers/system.js';
import {
  bitFlip,
  buildInitramfsWithCli,
  buildStates,
  dataDisk,
  luksDisk,
  parseReport,
  REPORT_BEGIN,
  REPORT_END,
  requireVmHost,
  writeBaseTree,
  type States,
} from '../helpers/vm-fixtures.js';
import { debianCloudKernel, type TestKernel } from '../helpers/vm-kernel.js';
import { Vm } from '../helpers/vm-qemu.js';

const PASSPHRASE = 'correct horse battery';
let scratch: Scratch;
let kernel: TestKernel;
let states: States;
const initrd: Record<'plain' | 'luks', string> = { plain: '', luks: '' };
const disk: Record<'full' | 'flipped' | 'noRootfs' | 'luks', string> = { full: '', flipped: '', noRootfs: '', luks: '' };
const timings: string[] = [];

beforeAll(async () => {
  requireVmHost();
  scratch = new Scratch();
  kernel = await debianCloudKernel();
  initrd.plain = scratch.path('initramfs.gz');
  initrd.luks = scratch.path('initramfs-luks.gz');
  await buildInitramfsWithCli(kernel, initrd.plain, false);
  await buildInitramfsWithCli(kernel, initrd.luks, true);

  await writeBaseTree(scratch.path('base'));
  states = await buildStates(scratch, scratch.path('base'));
  const files = {
    [DATA.rootfs]: join(states.data, DATA.rootfs),
    [DATA.newest]: join(states.data, DATA.newest),
    [DATA.backup]: join(states.data, DATA.backup),
  };
  disk.full = await dataDisk(scratch, 'full', files);
  await bitFlip(files[DATA.newest]!, scratch.path('flipped.squashfs'));
  disk.flipped = await dataDisk(scratch, 'flipped', { ...files, [DATA.newest]: scratch.path('flipped.squashfs') });
  const { [DATA.rootfs]: _, ...noRootfs } = files;
  disk.noRootfs = await dataDisk(scratch, 'no-rootfs', noRootfs);
  disk.luks = await luksDisk(scratch, disk.full, PASSPHRASE);
}, 600_000);

afterAll(async () => {
  await scratch?.cleanup();
  if (timings.length) {
    const summary = `VM boot times (seconds from QEMU start):\n${timings.join('\n')}\n`;
    process.stdout.write(summary);
    writeFileSync(join(process.env.TMPDIR ?? '/tmp', 'cairn-vm-logs', 'timings.txt'), summary);
  }
});

interface BootCase {
  name: string;
  append: string;
  disk: string;
  luks?: boolean;
}

/** Starts a boot whose console log is printed if the test fails; the caller stops it. */
async function start(c: BootCase): Promise<Vm> {
  const vm = await Vm.start({
    name: c.name,
    kernel: kernel.vmlinuz,
    initrd: c.luks ? initrd.luks : initrd.plain,
    append: `quiet panic=-1 ${c.append}`,
    disks: [c.disk],
  });
  onTestFailed(() => {
    process.stderr.write(`\n----- console of "${c.name}" (${vm.logFile}) -----\n${vm.output}\n----- end of console -----\n`);
  });
  return vm;
}

/** Boots to the reporting init and returns what it saw; the VM must then power off. */
async function bootAndReport(c: BootCase, whileBooting?: (vm: Vm) => Promise<void>) {
  const vm = await start(c);
  try {
    await whileBooting?.(vm);
    await vm.waitFor(REPORT_BEGIN, 120_000);
    const reportAt = vm.seconds();
    const end = await vm.waitFor(new RegExp(`([^]*?)${REPORT_END}`), 30_000);
    const exit = await vm.waitForExit(30_000);
    timings.push(`  ${c.name}: init reported at ${reportAt} s, powered off at ${vm.seconds()} s`);
    return { seen: parseReport(end[1]!), console: vm.output, exit };
  } finally {
    await vm.stop();
  }
}

describe('booting a cairn data disk in QEMU', () => {
  it('shows the newest state on a default boot, with the deleted base file hidden', async () => {
    const r = await bootAndReport({ name: 'default', append: 'cairn.boot=default', disk: disk.full });
    expect(r.seen).toMatchObject({
      'file.state': 'new',
      'file.new-only': 'new',
      'file.old-only': 'absent',
      'file.gone': 'absent',
      'file.base': 'base',
      'record.requested': 'default',
      'record.used': 'default',
      'record.state_id': states.newId,
      'record.fallback': '',
      'record.kernel': kernel.version,
    });
    expect(r.seen['mount./']).toMatch(/^\S+ overlay rw$/);
    expect(r.seen['mount./persist']).toMatch(/^\/dev\/vda ext4 rw$/);
    expect(r.seen['mount./run/cairn/rw']).toBeDefined();
    expect(r.exit.code).toBe(0);
  });

  it('shows the old state on a backup boot', async () => {
    const r = await bootAndReport({ name: 'backup', append: 'cairn.boot=backup', disk: disk.full });
    expect(r.seen).toMatchObject({
      'file.state': 'old',
      'file.old-only': 'old',
      'file.new-only': 'absent',
      'file.gone': 'absent',
      'record.requested': 'backup',
      'record.used': 'backup',
      'record.state_id': states.oldId,
      'record.fallback': '',
    });
  });

  it('shows neither state on a clean boot', async () => {
    const r = await bootAndReport({ name: 'clean', append: 'cairn.boot=clean', disk: disk.full });
    expect(r.seen).toMatchObject({
      'file.state': 'base',
      'file.old-only': 'absent',
      'file.new-only': 'absent',
      'file.gone': 'base file',
      'record.requested': 'clean',
      'record.used': 'clean',
      'record.state_id': '',
    });
  });

  it('puts the upper layer on zram (ext4 on /dev/zram0) when cairn.upper=zram', async () => {
    const r = await bootAndReport({ name: 'upper-zram', append: 'cairn.upper=zram cairn.upper_size=64M', disk: disk.full });
    expect(r.seen).toMatchObject({
      'record.upper': 'zram',
      'record.upper_size': String(64 << 20),
      'mount./run/cairn/rw': '/dev/zram0 ext4 rw',
      'file.state': 'new',
    });
  });

  it('puts the upper layer on tmpfs when cairn.upper=tmpfs', async () => {
    const r = await bootAndReport({ name: 'upper-tmpfs', append: 'cairn.upper=tmpfs cairn.upper_size=64M', disk: disk.full });
    expect(r.seen).toMatchObject({
      'record.upper': 'tmpfs',
      'record.upper_size': String(64 << 20),
      'mount./run/cairn/rw': 'cairn-upper tmpfs rw',
      'file.state': 'new',
    });
  });

  it('falls back to the backup when upperfs.squashfs is bit-flipped, and says so on the console', async () => {
    const r = await bootAndReport({ name: 'bit-flipped', append: 'cairn.boot=default', disk: disk.flipped });
    expect(r.console).toContain(
      'cairn: warning: upperfs.squashfs fails its checksum (cksum mismatch); booting the backup (upperfs-backup.squashfs) instead',
    );
    expect(r.seen).toMatchObject({
      'file.state': 'old',
      'record.requested': 'default',
      'record.used': 'backup',
      'record.state_id': states.oldId,
      'record.fallback': 'upperfs.squashfs fails its checksum (cksum mismatch)',
    });
  });

  it('stops with the reason and opens a rescue shell when rootfs.squashfs is missing (cairn.debug=1)', async () => {
    const vm = await start({ name: 'missing-rootfs', append: 'cairn.debug=1', disk: disk.noRootfs });
    try {
      await vm.waitFor('cairn: error: rootfs.squashfs is missing from the data partition', 120_000);
      await vm.waitFor('cairn: error: cannot boot: the base system (rootfs.squashfs) could not be mounted', 10_000);
      await vm.waitFor('cairn: starting a rescue shell; exit it to power off', 10_000);
      await vm.waitFor(/# /, 20_000);
      vm.send('echo rescue-$((6 * 7))\r');
      await vm.waitFor('rescue-42', 20_000);
      vm.send('exit\r');
      const exit = await vm.waitForExit(30_000);
      timings.push(`  missing-rootfs: rescue shell, powered off at ${vm.seconds()} s`);
      expect(exit.code).toBe(0);
    } finally {
      await vm.stop();
    }
  });

  it('unlocks a LUKS data partition with the passphrase typed on the console, after a wrong one', async () => {
    const r = await bootAndReport({ name: 'luks', append: 'cairn.boot=default', disk: disk.luks, luks: true }, async (vm) => {
      await vm.waitFor('cairn: /dev/vda is encrypted (LUKS)', 120_000);
      await vm.waitFor('Passphrase for /dev/vda (1 of 3): ', 30_000);
      vm.send('not the passphrase\r');
      await vm.waitFor('cairn: warning: wrong passphrase for /dev/vda', 60_000);
      await vm.waitFor('Passphrase for /dev/vda (2 of 3): ', 10_000);
      vm.send(`${PASSPHRASE}\r`);
      await vm.waitFor('cairn: unlocked /dev/vda as /dev/mapper/cairn-data', 60_000);
    });
    // Neither passphrase is echoed: echo is off before each prompt shows.
    expect(r.console).not.toContain(PASSPHRASE);
    expect(r.console).not.toContain('not the passphrase');
    expect(r.seen).toMatchObject({
      'file.state': 'new',
      'file.gone': 'absent',
      'record.used': 'default',
      'record.state_id': states.newId,
    });
    expect(r.seen['mount./persist']).toMatch(/^\/dev\/mapper\/cairn-data ext4 rw$/);
  });
});
