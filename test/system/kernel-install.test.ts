/**
 * Kernel installs on a stick from outside: the ESP is a FAT image written
 * with mtools (as cairn writes a stick's ESP), the data partition a
 * directory, the kernel Debian's cloud kernel unpacked (test/helpers/vm-kernel.ts).
 */
import { execa } from 'execa';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BOOT_STATE_FORMAT, ESP_PATHS, formatBootState, kernelFiles, readBootState } from '../../src/esp/bootState.js';
import { forgetRemovedKernels } from '../../src/packages/kernel.js';
import { Esp } from '../../src/esp/esp.js';
import { cairn, Scratch } from '../helpers/system.js';
import { requireHostTools } from '../helpers/vm-fixtures.js';
import { debianCloudKernel, type TestKernel } from '../helpers/vm-kernel.js';

let scratch: Scratch;
let kernel: TestKernel;

async function stick(name: string, espMiB: number, luks = false): Promise<{ esp: Esp; data: string }> {
  const image = scratch.path(`${name}-esp.img`);
  await execa('truncate', ['-s', `${espMiB}M`, image]);
  await execa('mkfs.vfat', ['-F', espMiB >= 64 ? '32' : '16', '-n', 'CAIRN-ESP', image]);
  const esp = new Esp(image);
  const state = {
    format: BOOT_STATE_FORMAT,
    settings: { esp: { by: 'label', value: 'CAIRN-ESP' }, dataSpec: 'LABEL=cairn-data', upper: 'tmpfs', serialSpeed: 115200, primaryConsole: 'serial' },
    timeoutSeconds: 3,
    luks,
    kernel: kernelFiles('6.1.0-1-old'),
  };
  await esp.install('grub/cairn-boot.json', { data: formatBootState(state as never) });
  await esp.install('grub/grub.cfg', { data: '# the menu before the update\n' });
  const data = scratch.path(`${name}-data`);
  await mkdir(data);
  return { esp, data };
}

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('these tests need root (files owned by root in the modules image): run them as root');
  requireHostTools('these tests', ['mksquashfs', 'unsquashfs', 'mcopy', 'mkfs.vfat', 'depmod', 'busybox', 'apt-get', 'dpkg-deb']);
  scratch = new Scratch();
  kernel = await debianCloudKernel();
}, 600_000);

afterAll(async () => {
  await scratch?.cleanup();
});

describe('the ESP through mtools', () => {
  it('replaces a file whole, lists, reads and removes', async () => {
    const { esp } = await stick('mtools', 64);
    await esp.install('grub/x.cfg', { data: 'one' });
    await esp.install('grub/x.cfg', { data: 'two' });
    expect((await esp.read('grub/x.cfg'))!.toString()).toBe('two');
    expect((await esp.list('grub')).map((n) => n.toLowerCase()).sort()).toEqual(['cairn-boot.json', 'grub.cfg', 'x.cfg']);
    await esp.remove('grub/x.cfg');
    expect(await esp.exists('grub/x.cfg')).toBe(false);
    expect(await esp.read('grub/x.cfg')).toBeUndefined();
    await expect(esp.install('../x', { data: '' })).rejects.toThrow(/not a file name cairn writes/);
  });
});

describe('cairn kernel install', () => {
  it('refuses an ESP too small for the kernel and its initramfs, and changes nothing', async () => {
    const { esp, data } = await stick('small', 16);
    const r = await cairn(['kernel', 'install', '--from', kernel.root, '--data', data, '--esp', esp.device]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/the ESP \(.*\) has [\d.]+ \w+ free; the kernel and its initramfs need/);
    expect(readdirSync(data)).toEqual([]);
    expect((await esp.read('grub/grub.cfg'))!.toString()).toBe('# the menu before the update\n');
    expect(await esp.exists(`vmlinuz-${kernel.version}`)).toBe(false);
  }, 300_000);

  it('refuses a tree without a kernel', async () => {
    const { esp, data } = await stick('empty', 64);
    await mkdir(scratch.path('no-kernel/boot'), { recursive: true });
    const r = await cairn(['kernel', 'install', '--from', scratch.path('no-kernel'), '--data', data, '--esp', esp.device]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/holds no kernel/);
  });

  it('writes the modules image, the kernel and the initramfs, and a menu that keeps the old kernel', async () => {
    const { esp, data } = await stick('ok', 64);
    const r = await cairn(['kernel', 'install', '--from', kernel.root, '--data', data, '--esp', esp.device, '--running-kernel', '6.1.0-1-old']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(existsSync(join(data, `modules-${kernel.version}.squashfs`))).toBe(true);
    expect(readdirSync(data).filter((f) => f.endsWith('.tmp') || f.startsWith('.cairn-'))).toEqual([]);
    const menu = (await esp.read('grub/grub.cfg'))!.toString();
    expect(menu).toContain(`linux /vmlinuz-${kernel.version} cairn.boot=default`);
    expect(menu).toContain('previous kernel 6.1.0-1-old');
    const status = await cairn(['status', '--data', data, '--upper', data, '--esp', esp.device]);
    expect(status.stdout).toContain(`kernel booted by default: ${kernel.version} (the menu keeps 6.1.0-1-old until it is confirmed)`);
    // Boot counting: GRUB gives the new kernel its tries (docs/boot.md).
    expect(status.stdout).toContain('the default kernel: on trial, 3 of 3 tries left until a boot is marked good');
    expect((await esp.read('grub/grubenv'))!.toString('latin1')).toMatch(/^# GRUB Environment Block\ncairn_kernel_tries=3\n#+$/);
    expect(status.stdout).toContain(`modules images: ${kernel.version}`);
  }, 300_000);

  it('on an encrypted stick, gives the new kernel an initramfs that unlocks it: cryptsetup and dm-crypt', async () => {
    const { esp, data } = await stick('luks', 64, true);
    const r = await cairn(['kernel', 'install', '--from', kernel.root, '--data', data, '--esp', esp.device, '--running-kernel', '6.1.0-1-old']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect((await readBootState(esp)).luks).toBe(true);
    const initrd = (await esp.read(ESP_PATHS.initrd(kernel.version)))!;
    const list = (await execa('cpio', ['-t', '--quiet'], { input: gunzipSync(initrd) })).stdout.split('\n');
    expect(list).toContain('usr/sbin/cryptsetup');
    // Loaded by glibc when argon2's threads end: without it every unlock aborts.
    expect(list.some((f) => f.endsWith('/libgcc_s.so.1'))).toBe(true);
    expect(list.some((f) => /\/dm-crypt\.ko(\.[gx]z|\.zst)?$/.test(f))).toBe(true);
  }, 300_000);

  it('forgets a previous kernel whose package is gone, but never the running or the default one', async () => {
    const { esp, data } = await stick('removal', 64);
    await esp.install('vmlinuz-6.1.0-1-old', { data: 'stand-in for the old kernel' });
    await writeFile(join(data, 'modules-6.1.0-1-old.squashfs'), 'stand-in for the old modules image');
    const r = await cairn(['kernel', 'install', '--from', kernel.root, '--data', data, '--esp', esp.device, '--running-kernel', '6.1.0-1-old']);
    expect(r.exitCode, r.stderr).toBe(0);
    const t = (running: string) => ({ dataDir: data, esp, initDir: '', runningKernel: running });
    const gone = async (release: string) => release !== '6.1.0-1-old';

    // Still running the old kernel: it stays, entry and files.
    expect(await forgetRemovedKernels(t('6.1.0-1-old'), gone)).toEqual({ kept: ['6.1.0-1-old'] });
    expect(await esp.exists('vmlinuz-6.1.0-1-old')).toBe(true);

    // Running the new one: the old one goes from the record, the menu and the ESP.
    expect(await forgetRemovedKernels(t(kernel.version), gone)).toEqual({ dropped: '6.1.0-1-old', kept: [] });
    expect(await esp.exists('vmlinuz-6.1.0-1-old')).toBe(false);
    expect(existsSync(join(data, 'modules-6.1.0-1-old.squashfs'))).toBe(false);
    expect((await esp.read('grub/grub.cfg'))!.toString()).not.toContain('previous kernel');
    expect((await readBootState(esp)).previousKernel).toBeUndefined();

    // The default kernel's package gone: nothing else to boot, so it stays.
    expect(await forgetRemovedKernels(t(kernel.version), async () => false)).toEqual({ kept: [kernel.version] });
    expect(await esp.exists(`vmlinuz-${kernel.version}`)).toBe(true);
    expect(existsSync(join(data, `modules-${kernel.version}.squashfs`))).toBe(true);
  }, 300_000);
});
