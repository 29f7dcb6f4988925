/**
 * The stick's life after it is written: the built debian image (the shared
 * user's-day image, test/helpers/vm-stick.ts) booted as a larger stick the
 * way a user tries it, `cairn vm --disk-size 3G`, whose first boot grows the
 * data partition to fill it. QEMU is killed (a power cut) right after each
 * step of the growth says it is done: the table's backup copy moved, the
 * partition grown, the file system grown; each next boot goes on from
 * there. The last cut leaves the mounted data partition dirty, and the
 * next boot checks and repairs it before it mounts it. Then a save,
 * `cairn reset`, and the boot after it finds the stick as built.
 *
 * A kill comes a moment after the console shows a step done, so the guest
 * may have begun the next step: the checks between boots hold for a cut
 * anywhere, and each boot's console says what it still had to do.
 */
import { execa } from 'execa';
import { mkdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { DATA } from '../../src/names.js';
import { grownCopyPath } from '../../src/vm/diskSize.js';
import { requireVmHost } from '../helpers/vm-fixtures.js';
import { CLI } from '../helpers/system.js';
import { CACHE } from '../helpers/vm-kernel.js';
import { Vm } from '../helpers/vm-qemu.js';
import { Session } from '../helpers/vm-session.js';
import { MENU, PASSWORD, prepareStick, SIZE_MIB } from '../helpers/vm-stick.js';

const WORK = join(CACHE, 'lifecycle');
const DISK = '3G';
const DISK_SECTORS = (3 * 1024 ** 3) / 512;
/** Where the GPT's backup copy and the grown partition end on the 3G stick. */
const LAST_LBA = DISK_SECTORS - 34;
const MiB = 1 << 20;

let image: string;
let grown: string;
const vms: Vm[] = [];
const timings: string[] = [];

/** `cairn vm` as a user runs it, on the stick as a 3G one. */
async function start(name: string): Promise<Vm> {
  const vm = await Vm.start({ name: `lifecycle-${name}`, command: [process.execPath, CLI, 'vm', '--bus', 'virtio', '--no-network', '--disk-size', DISK, image] });
  vms.push(vm);
  onTestFailed(() => {
    process.stderr.write(`\n----- console of "${name}" (${vm.logFile}) -----\n${vm.output.slice(-20_000)}\n----- end of console -----\n`);
  });
  await new Session(vm).pickEntry(MENU, 0);
  return vm;
}

/** Waits for PATTERN on the console, then cuts the power. */
async function cutAfter(vm: Vm, name: string, pattern: RegExp | string): Promise<void> {
  await vm.waitFor(pattern, 300_000);
  await vm.stop();
  timings.push(`  ${name}: power cut at ${vm.seconds()} s`);
}

interface Table {
  lastLba: number;
  data: { start: number; size: number };
}

/** The stick's partition table, read on the host; sfdisk --verify finds it whole. */
async function table(): Promise<Table> {
  const verify = await execa('sfdisk', ['--verify', grown], { env: { LC_ALL: 'C' }, reject: false });
  expect(verify.exitCode, verify.stdout + verify.stderr).toBe(0);
  const { stdout } = await execa('sfdisk', ['--json', grown], { env: { LC_ALL: 'C' } });
  const t = JSON.parse(stdout).partitiontable as { lastlba: number; partitions: Array<{ node: string; start: number; size: number }> };
  const data = t.partitions.find((p) => p.node.endsWith('2'))!;
  return { lastLba: t.lastlba, data: { start: data.start, size: data.size } };
}

/** The size of the data partition's ext4, from its superblock, read on the host. */
async function ext4Bytes(t: Table): Promise<number> {
  const { stdout } = await execa('dumpe2fs', ['-h', `${grown}?offset=${t.data.start * 512}`], { env: { LC_ALL: 'C' }, reject: false });
  const count = /^Block count:\s+(\d+)/m.exec(stdout);
  const size = /^Block size:\s+(\d+)/m.exec(stdout);
  if (!count || !size) throw new Error(`dumpe2fs found no ext4 at the data partition:\n${stdout}`);
  return Number(count[1]) * Number(size[1]);
}

describe.sequential('the stick grows, survives power cuts, and resets (debian image, `cairn vm --disk-size`)', () => {
  let built: Table;

  beforeAll(async () => {
    requireVmHost();
    mkdirSync(WORK, { recursive: true });
    ({ image } = await prepareStick(WORK, 'lifecycle'));
    grown = grownCopyPath(image, DISK);
    rmSync(grown, { force: true });
    const { stdout } = await execa('sfdisk', ['--json', image], { env: { LC_ALL: 'C' } });
    const t = JSON.parse(stdout).partitiontable as { lastlba: number; partitions: Array<{ node: string; start: number; size: number }> };
    built = { lastLba: t.lastlba, data: t.partitions.find((p) => p.node.endsWith('2'))! };
  }, 1800_000);

  afterAll(async () => {
    for (const vm of vms) await vm.stop();
    process.stdout.write(`the stick's life:\n${timings.join('\n')}\n`);
  });

  it('cairn vm --disk-size makes a 3G copy beside the image; its first boot moves the GPT backup copy (power cut there)', async () => {
    const vm = await start('1-moved');
    expect(vm.stderr).toContain(`cairn vm: made ${grown}, a copy of ${image} as a ${DISK} stick`);
    expect(statSync(grown).size).toBe(DISK_SECTORS * 512);
    expect(statSync(image).size).toBe(SIZE_MIB * MiB);
    await cutAfter(vm, '1-moved', "cairn: moved the partition table's backup copy to the end of /dev/vda");
    const t = await table();
    expect(t.lastLba).toBe(LAST_LBA);
    // The partition is either as built or grown whole, never in between.
    expect([built.data.size, LAST_LBA - built.data.start + 1]).toContain(t.data.size);
    expect(t.data.start).toBe(built.data.start);
  }, 600_000);

  it('the next boot grows the partition (power cut there): the table is whole and the file system as built', async () => {
    const vm = await start('2-partition');
    expect(vm.stderr).toContain(`cairn vm: booting ${grown}, the ${DISK} copy of ${image} made earlier`);
    await cutAfter(vm, '2-partition', /cairn: the data partition \/dev\/vda2 now fills \/dev\/vda: \d+ MiB -> \d+ MiB/);
    expect(vm.output).not.toContain("moved the partition table's backup copy");
    const t = await table();
    expect(t).toEqual({ lastLba: LAST_LBA, data: { start: built.data.start, size: LAST_LBA - built.data.start + 1 } });
    // As built, or on its way to the grown size if the cut came late.
    const fs = await ext4Bytes(t);
    expect(fs).toBeGreaterThan(built.data.size * 512 - MiB);
    expect(fs).toBeLessThanOrEqual(t.data.size * 512);
  }, 600_000);

  it('the next boot grows the mounted file system online (power cut there, with the data partition mounted)', async () => {
    const vm = await start('3-filesystem');
    await cutAfter(vm, '3-filesystem', /cairn: the file system on \/dev\/vda2 now fills it: \d+ MiB/);
    expect(vm.output).not.toContain('growing the data partition');
    const t = await table();
    expect(await ext4Bytes(t)).toBeGreaterThan((t.data.size * 512) - 32 * MiB);
  }, 600_000);

  it('the next boot repairs the dirty data partition before it mounts it and grows nothing more; cairn reset --yes then removes the saved state, and the shutdown saves nothing', async () => {
    const vm = await start('4-reset');
    try {
      const s = new Session(vm);
      await s.login('root', PASSWORD);
      timings.push(`  4-reset: logged in at ${vm.seconds()} s`);
      expect(vm.output).toMatch(/cairn: the data partition \/dev\/vda2: journal replayed by e2fsck -p/);
      expect(vm.output).not.toMatch(/cairn: growing/);
      // The session sees the whole stick: the stick less its ESP is 2813 MiB, where the image's data partition had 1789.
      const kib = Number(await s.ok("df -k /persist | awk 'NR == 2 { print $2 }'"));
      expect(kib * 1024).toBeGreaterThan(2.5 * 1024 ** 3);
      expect(await s.ok('cairn status')).toMatch(/data partition at boot: journal replayed/);
      await s.ok('echo saved-then-reset > /root/reset.txt && cairn save');
      expect(await s.ok(`ls /persist/${DATA.newest}`)).toBe(`/persist/${DATA.newest}`);
      const reset = await s.ok('cairn reset --yes');
      expect(reset).toContain(`removed ${DATA.newest}`);
      expect(reset).toContain('this session will not be saved at shutdown');
      expect(await s.ok(`ls /persist/${DATA.newest} 2>&1 || true`)).toMatch(/No such file/);
      const shutdown = await s.powerOff();
      timings.push(`  4-reset: powered off at ${vm.seconds()} s`);
      expect(shutdown).toContain('this session reset the stick');
    } finally {
      await vm.stop();
    }
  }, 900_000);

  it('the boot after the reset finds the stick as built: no saved state, and the grown size kept', async () => {
    const vm = await start('5-after-reset');
    await cutAfter(vm, '5-after-reset', 'cairn: no saved state on this stick yet (its first boot)');
    expect(vm.output).not.toMatch(/cairn: growing/);
    const t = await table();
    expect(t.data.size).toBe(LAST_LBA - built.data.start + 1);
  }, 600_000);
});
