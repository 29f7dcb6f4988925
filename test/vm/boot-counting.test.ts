/**
 * Boot counting end to end, with nobody at the keyboard: the README's debian
 * image (the shared user's-day image, test/helpers/vm-stick.ts) booted with
 * `cairn vm` as a user runs it, no key pressed. `cairn vm` runs QEMU with
 * -no-reboot, so each boot that panics ends QEMU, and the host reads GRUB's
 * environment block on the image between boots (docs/boot.md, "Boot counting").
 *
 * 1. A newest state whose init is broken, on a stick set to 1 try (each try
 *    costs a whole boot under emulation; the countdown itself is seen in 2):
 *    GRUB tries it (a kernel panic, "Attempted to kill init"), then boots
 *    the backup by itself; the console, the login and `cairn status` say
 *    why, and the shutdown save keeps the broken state and puts the
 *    session's new one on trial.
 * 2. A kernel that panics at once (the image's kernel given an initramfs
 *    whose init exits) is tried its tries and then the previous kernel boots
 *    by itself: under SeaBIOS with 2 tries, under OVMF with 1.
 *
 * That a good boot of the newest state confirms it is seen in
 * test/vm/stick.test.ts step 3, a boot that happens there anyway.
 */
import { execa } from 'execa';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { armTries, readTries, writeTries } from '../../src/boot/counting.js';
import { kernelFiles, readBootState, writeBootState, type BootState } from '../../src/esp/bootState.js';
import { Esp } from '../../src/esp/esp.js';
import { planLayout } from '../../src/image/layout.js';
import { DATA, ESP_PATHS } from '../../src/names.js';
import { requireVmHost } from '../helpers/vm-fixtures.js';
import { cairn, CLI } from '../helpers/system.js';
import { CACHE } from '../helpers/vm-kernel.js';
import { Vm } from '../helpers/vm-qemu.js';
import { Session } from '../helpers/vm-session.js';
import { PASSWORD, prepareStick, SIZE_MIB } from '../helpers/vm-stick.js';

const WORK = join(CACHE, 'boot-counting');
const PANIC = 'Kernel panic - not syncing';
const layout = planLayout(SIZE_MIB * 1024 * 1024, 256);

let image: string;
let esp: Esp;
const vms: Vm[] = [];
const timings: string[] = [];

/** `cairn vm` as a user runs it; nothing is typed at the menu. */
async function start(name: string, uefi = false): Promise<Vm> {
  const vm = await Vm.start({
    name: `counting-${name}`,
    command: [process.execPath, CLI, 'vm', '--bus', 'virtio', '--no-network', ...(uefi ? ['--uefi'] : []), image],
  });
  vms.push(vm);
  onTestFailed(() => {
    process.stderr.write(`\n----- console of "${name}" (${vm.logFile}) -----\n${vm.output.slice(-20_000)}\n----- end of console -----\n`);
  });
  return vm;
}

/** A boot that panics: QEMU (-no-reboot) ends at the restart. */
async function panics(name: string, uefi = false): Promise<Vm> {
  const vm = await start(name, uefi);
  await vm.waitForExit(300_000);
  timings.push(`  ${name}: ended by its panic at ${vm.seconds()} s`);
  expect(vm.output).toContain(PANIC);
  return vm;
}

/** Runs FN with the data partition of the image mounted on the host. */
async function withData<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const mnt = join(WORK, 'mnt');
  mkdirSync(mnt, { recursive: true });
  await execa('mount', ['-o', `loop,offset=${layout.data.startSector * 512}`, image, mnt]);
  try {
    return await fn(mnt);
  } finally {
    await execa('umount', [mnt]);
  }
}

describe.sequential('boot counting: GRUB rolls back by itself (debian image, `cairn vm`, no key pressed)', () => {
  beforeAll(async () => {
    requireVmHost();
    mkdirSync(WORK, { recursive: true });
    ({ image } = await prepareStick(WORK, 'counting'));
    esp = new Esp(image, layout.esp.startSector * 512);
  }, 1800_000);

  afterAll(async () => {
    for (const vm of vms) await vm.stop();
    process.stdout.write(`boot counting:\n${timings.join('\n')}\n`);
  });

  it('a newest state whose init exits is tried its 1 try, then the backup boots by itself and says why; the rolled-back session\'s save keeps it', async () => {
    // Two states saved on the host by the real `cairn save`: a good one, then one whose init exits.
    const good = join(WORK, 'upper-good');
    const bad = join(WORK, 'upper-bad');
    rmSync(good, { recursive: true, force: true });
    rmSync(bad, { recursive: true, force: true });
    mkdirSync(join(good, 'root'), { recursive: true });
    writeFileSync(join(good, 'root/which-state'), 'the backup\n');
    mkdirSync(join(bad, 'root'), { recursive: true });
    mkdirSync(join(bad, 'usr/sbin'), { recursive: true });
    writeFileSync(join(bad, 'root/which-state'), 'the newest\n');
    writeFileSync(join(bad, 'usr/sbin/init'), '#!/bin/sh\necho "cairn-test: this init exits"\nexit 1\n');
    chmodSync(join(bad, 'usr/sbin/init'), 0o755);
    await withData(async (data) => {
      for (const upper of [good, bad]) {
        const r = await cairn(['save', '--upper', upper, '--data', data]);
        expect(r.exitCode, r.stderr).toBe(0);
      }
    });
    // The stick set to 1 try (`cairn grub config --boot-tries 1` would say the same), then what a
    // save on the running stick does after it (src/packages/target.ts refreshMenu).
    const state = await readBootState(esp);
    await withData((data) => writeBootState(esp, data, { ...state, settings: { ...state.settings, bootTries: 1 } }));
    await armTries(esp, 'state');
    expect(await readTries(esp)).toEqual({ state: 1 });

    for (const left of [0]) {
      const vm = await panics(`state-try-${1 - left}`);
      expect(vm.output).toContain(`cairn: the newest state is on trial, tries left: ${left}`);
      // The state's init ran and exited (its own words may be cut by the panic's on the serial line).
      expect(vm.output).toContain('cairn: switching to the new root: /sbin/init');
      expect(vm.output).toContain('Attempted to kill init!');
      expect(await readTries(esp)).toEqual({ state: left });
    }

    const vm = await start('state-rolled-back');
    try {
      const s = new Session(vm);
      await s.login('root', PASSWORD);
      timings.push(`  state-rolled-back: logged in at ${vm.seconds()} s`);
      expect(vm.output).toContain('cairn: the newest state did not come up in its tries: booting the backup');
      expect(vm.output).toContain('upperfs.squashfs did not bring the system up in its tries (boot counting); booting the backup (upperfs-backup.squashfs) instead');
      expect(vm.output).toContain('*** cairn: the newest state did not bring the system up in its tries, so GRUB booted the backup.');
      expect(await s.ok('cat /root/which-state')).toBe('the backup');
      const status = await s.ok('cairn status --quick');
      expect(status).toMatch(/booted: backup \(asked for default\)/);
      expect(status).toContain('fallback: upperfs.squashfs did not bring the system up in its tries (boot counting)');
      expect(status).toMatch(/the newest state: did not come up in 1 try; GRUB boots the backup \(cairn boot retry tries it again\)/);
      // The good-boot mark ran and confirmed nothing it rolled back from.
      expect(await s.ok('rc-service cairn-boot-good status')).toMatch(/started/);
      expect(await readTries(esp)).toEqual({ state: 0 });
      const shutdown = await s.powerOff();
      expect(shutdown).toMatch(/Saving this session to the stick/);
    } finally {
      await vm.stop();
    }
    // The session's save is the newest now, on trial; the broken state is kept.
    expect(await readTries(esp)).toEqual({ state: 1 });
    const names = await withData(async (data) => (await execa('ls', [data])).stdout.split('\n'));
    expect(names.filter((n) => n.startsWith('upperfs'))).toEqual(expect.arrayContaining(['upperfs.squashfs', 'upperfs-backup.squashfs', 'upperfs-gen-1.squashfs']));
    // ... and held: no later save prunes it until the user boots or releases it.
    expect((await withData(async (data) => (await execa('cat', [join(data, DATA.held)])).stdout))).toContain('did not bring the system up in its tries');
  }, 1800_000);

  /** Puts a kernel on trial that panics at once: the image's own kernel with an initramfs whose init exits. */
  async function brokenKernel(tries: number): Promise<BootState> {
    const state = await readBootState(esp);
    const good = state.previousKernel ?? state.kernel;
    const tree = join(WORK, 'broken-initramfs');
    rmSync(tree, { recursive: true, force: true });
    mkdirSync(join(tree, 'bin'), { recursive: true });
    await execa('cp', ['/bin/busybox', join(tree, 'bin/busybox')]);
    writeFileSync(join(tree, 'init'), '#!/bin/busybox sh\n/bin/busybox echo "cairn-test: this initramfs exits"\nexit 1\n');
    chmodSync(join(tree, 'init'), 0o755);
    const cpio = join(WORK, 'broken.cpio');
    await execa('sh', ['-c', `cd '${tree}' && find . | cpio -o -H newc --quiet > '${cpio}'`]);
    const vmlinuz = join(WORK, 'vmlinuz');
    writeFileSync(vmlinuz, (await esp.read(good.kernel.slice(1)))!);
    await esp.install(ESP_PATHS.kernel('broken'), { file: vmlinuz });
    await esp.install(ESP_PATHS.initrd('broken'), { file: cpio });
    const next: BootState = { ...state, settings: { ...state.settings, bootTries: tries }, kernel: kernelFiles('broken'), previousKernel: good };
    // As `cairn kernel install` does it: the tries first, then the record and
    // the menu; the newest state is confirmed, so only the kernel is on trial.
    await writeTries(esp, {});
    await armTries(esp, 'kernel', tries);
    await withData((data) => writeBootState(esp, data, next));
    return next;
  }

  for (const [firmware, tries] of [['SeaBIOS', 2], ['OVMF', 1]] as const) {
    it(`under ${firmware}: a kernel that panics at once is tried ${tries} time(s), then the previous kernel boots by itself`, async () => {
      const uefi = firmware === 'OVMF';
      await brokenKernel(tries);
      for (let left = tries - 1; left >= 0; left--) {
        const vm = await panics(`${firmware}-kernel-try-${tries - left}`, uefi);
        // Under OVMF, GRUB writes its console to the serial line twice, interleaved.
        expect(vm.output).toMatch(new RegExp(`cairn: the default kernel is on trial, tries left:[^\\n]*${left}`));
        // The broken initramfs's init ran and exited (its words may be cut by the panic's).
        expect(vm.output).toContain('Attempted to kill init!');
        expect(vm.output).not.toContain('cairn: boot=default');
        expect((await readTries(esp)).kernel).toBe(left);
      }
      const vm = await start(`${firmware}-previous-kernel`, uefi);
      try {
        await vm.waitFor('cairn: the default kernel did not come up: booting the previous kernel', 120_000);
        // The previous kernel's initramfs, cairn's own, is running: the rollback booted.
        await vm.waitFor(/cairn: boot=default upper=/, 300_000);
        timings.push(`  ${firmware}-previous-kernel: its initramfs ran at ${vm.seconds()} s`);
        expect(vm.output).not.toContain('Attempted to kill init!');
      } finally {
        await vm.stop();
      }
      expect((await readTries(esp)).kernel).toBe(0);
    }, 1200_000);
  }
});
