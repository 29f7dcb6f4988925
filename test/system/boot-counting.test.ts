/**
 * Boot counting from the running system's side, on a stick's ESP made as
 * the image builder makes it (a FAT image written with mtools): the
 * counters cairn writes are GRUB's environment block as GRUB's own
 * grub-editenv reads and writes it, the good-boot mark and `cairn boot
 * retry` move them as docs/boot.md says, and `cairn status` tells them.
 * GRUB's side (counting down, rolling back) runs in test/vm/boot-counting.test.ts.
 */
import { execa } from 'execa';
import { mkdir, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { armTries } from '../../src/boot/counting.js';
import { BOOT_STATE_FORMAT, formatBootState, kernelFiles } from '../../src/esp/bootState.js';
import { Esp } from '../../src/esp/esp.js';
import { cairn, Scratch } from '../helpers/system.js';
import { requireHostTools } from '../helpers/vm-fixtures.js';

const s = new Scratch();
let esp: Esp;
let data: string;

/** The block as GRUB reads it: grub-editenv FILE list, from a copy taken off the ESP. */
async function grubSees(): Promise<Record<string, string>> {
  const copy = s.path('grubenv');
  await writeFile(copy, (await esp.read('grub/grubenv'))!);
  const r = await execa('grub-editenv', [copy, 'list']);
  return Object.fromEntries(r.stdout.split('\n').filter(Boolean).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

/** What GRUB's save_env leaves after counting down: the block edited by grub-editenv, put back. */
async function grubSets(assignment: string): Promise<void> {
  const copy = s.path('grubenv');
  await writeFile(copy, (await esp.read('grub/grubenv'))!);
  await execa('grub-editenv', [copy, 'set', assignment]);
  await esp.install('grub/grubenv', { file: copy });
}

async function record(name: string, lines: string): Promise<string> {
  const path = s.path(`record-${name}`);
  await writeFile(path, `${lines}\nsession=x\n`);
  return path;
}

const target = (kernel: string) => ['--data', data, '--esp', esp.device, '--running-kernel', kernel];

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('these tests need root (the status reads root-only states): run them as root');
  requireHostTools('boot counting tests', ['mkfs.vfat', 'mcopy', 'grub-editenv']);
  const image = s.path('esp.img');
  await execa('truncate', ['-s', '64M', image]);
  await execa('mkfs.vfat', ['-F', '32', '-n', 'CAIRN-ESP', image]);
  esp = new Esp(image);
  const state = {
    format: BOOT_STATE_FORMAT,
    settings: { esp: { by: 'label', value: 'CAIRN-ESP' }, dataSpec: 'LABEL=cairn-data', upper: 'tmpfs', serialSpeed: 115200, primaryConsole: 'serial' },
    timeoutSeconds: 3,
    luks: false,
    kernel: kernelFiles('6.1.0-2-new'),
    previousKernel: kernelFiles('6.1.0-1-old'),
  };
  await esp.install('grub/cairn-boot.json', { data: formatBootState(state as never) });
  data = s.path('data');
  await mkdir(data);
});
afterAll(() => s.cleanup());

describe('boot counting on the ESP', () => {
  it('a good boot on a stick without counters writes the block GRUB needs to count into, with nothing on trial', async () => {
    const r = await cairn(['boot', 'good', ...target('6.1.0-2-new'), '--boot-record', await record('clean', 'requested=default\nused=clean')]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/boot marked good: nothing was on trial/);
    expect((await esp.read('grub/grubenv'))!.length).toBe(1024);
    expect(await grubSees()).toEqual({});
  });

  it('a new kernel and a new newest state get 3 tries each, as GRUB reads them', async () => {
    await armTries(esp, 'kernel');
    await armTries(esp, 'state');
    expect(await grubSees()).toEqual({ cairn_kernel_tries: '3', cairn_state_tries: '3' });
    const st = await cairn(['status', '--quick', '--data', data, '--esp', esp.device]);
    expect(st.stdout).toContain('boot counting: 3 tries for a new kernel or newest state');
    expect(st.stdout).toContain('the default kernel: on trial, 3 of 3 tries left until a boot is marked good');
  });

  it('a boot of the previous kernel that came up confirms neither the new kernel nor a state it did not unpack', async () => {
    await grubSets('cairn_kernel_tries=0');
    const r = await cairn(['boot', 'good', ...target('6.1.0-1-old'), '--boot-record', await record('backup', 'requested=backup\nused=backup')]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/nothing was on trial[\s\S]*the default kernel stays rolled back/);
    expect(await grubSees()).toEqual({ cairn_kernel_tries: '0', cairn_state_tries: '3' });
  });

  it('after the newest state used its tries: status says GRUB rolls back; a rollback boot confirms nothing; retry gives the tries back', async () => {
    await grubSets('cairn_state_tries=0');
    const st = await cairn(['status', '--quick', '--data', data, '--esp', esp.device]);
    expect(st.stdout).toContain('next default boot: backup (GRUB rolls back: the newest state used its tries)');
    expect(st.stdout).toMatch(/the newest state: did not come up in 3 tries; GRUB boots the backup \(cairn boot retry tries it again\)/);
    const rb = await record('rollback', 'requested=default\nused=backup\nfallback=upperfs.squashfs did not bring the system up in its tries (boot counting)\nrollback=state');
    expect((await cairn(['boot', 'good', ...target('6.1.0-1-old'), '--boot-record', rb])).exitCode).toBe(0);
    expect(await grubSees()).toEqual({ cairn_kernel_tries: '0', cairn_state_tries: '0' });
    const retry = await cairn(['boot', 'retry', '--data', data, '--esp', esp.device]);
    expect(retry.exitCode, retry.stderr).toBe(0);
    expect(retry.stdout).toBe('the next boot tries the default kernel and the newest state again (3 tries)');
    expect(await grubSees()).toEqual({ cairn_kernel_tries: '3', cairn_state_tries: '3' });
  });

  it('a boot of the new kernel that unpacked the newest as asked confirms both, and keeps what else the block holds', async () => {
    await grubSets('other_setting=kept');
    await grubSets('cairn_kernel_tries=2');
    const r = await cairn(['boot', 'good', ...target('6.1.0-2-new'), '--boot-record', await record('default', 'requested=default\nused=default')]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/boot marked good: kernel 6\.1\.0-2-new and the newest state confirmed/);
    expect(await grubSees()).toEqual({ other_setting: 'kept' });
    const st = await cairn(['status', '--quick', '--data', data, '--esp', esp.device]);
    expect(st.stdout).toContain('the default kernel: confirmed');
    expect(st.stdout).toContain('the newest state: confirmed');
  });

  it('says so in status when the block is not one (a damaged file), and the next good boot or save writes a whole one', async () => {
    await esp.install('grub/grubenv', { data: 'not an environment block' });
    const st = await cairn(['status', '--quick', '--data', data, '--esp', esp.device]);
    expect(st.stdout).toMatch(/boot counting: unknown \(\/grub\/grubenv is not a GRUB environment block/);
    const r = await cairn(['boot', 'good', ...target('6.1.0-2-new'), '--boot-record', await record('damaged', 'requested=backup\nused=backup')]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await grubSees()).toEqual({});
    await esp.install('grub/grubenv', { data: 'not an environment block' });
    await armTries(esp, 'state');
    expect(await grubSees()).toEqual({ cairn_state_tries: '3' });
  });
});
