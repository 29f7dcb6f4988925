import { describe, expect, it } from 'vitest';
import { BOOT_STATE_FORMAT, formatBootState, kernelFiles, parseBootState, type BootState } from '../../src/esp/bootState.js';
import { buildMenu, PREVIOUS_KERNEL_ID, TITLES } from '../../src/grub/menu.js';
import { renderGrubConfig } from '../../src/grub/render.js';
import { debsFromHookInput } from '../../src/packages/debian/hook.js';
import { droppedKernels, nextBootState } from '../../src/packages/kernel.js';

const state = (release: string, previous?: string): BootState => ({
  format: BOOT_STATE_FORMAT,
  settings: { esp: { by: 'label', value: 'CAIRN-ESP' }, dataSpec: 'LABEL=cairn-data', upper: 'zram', serialSpeed: 115200, primaryConsole: 'serial' },
  timeoutSeconds: 3,
  luks: false,
  kernel: kernelFiles(release),
  ...(previous ? { previousKernel: kernelFiles(previous) } : {}),
});

describe('which kernels the menu keeps after an update', () => {
  it('keeps the running kernel as the second choice', () => {
    const next = nextBootState(state('6.1.0-50'), kernelFiles('6.1.0-56'), '6.1.0-50');
    expect(next.kernel.release).toBe('6.1.0-56');
    expect(next.previousKernel?.release).toBe('6.1.0-50');
    expect(droppedKernels(state('6.1.0-50'), next)).toEqual([]);
  });

  it('a second update before a reboot replaces the kernel that never booted, and keeps the one that runs', () => {
    const afterFirst = state('6.1.0-56', '6.1.0-50');
    const next = nextBootState(afterFirst, kernelFiles('6.1.0-57'), '6.1.0-50');
    expect(next.kernel.release).toBe('6.1.0-57');
    expect(next.previousKernel?.release).toBe('6.1.0-50');
    expect(droppedKernels(afterFirst, next)).toEqual(['6.1.0-56']);
  });

  it('booted from the new kernel, a further update keeps that one', () => {
    const next = nextBootState(state('6.1.0-56', '6.1.0-50'), kernelFiles('6.1.0-57'), '6.1.0-56');
    expect(next.previousKernel?.release).toBe('6.1.0-56');
    expect(droppedKernels(state('6.1.0-56', '6.1.0-50'), next)).toEqual(['6.1.0-50']);
  });

  it('reinstalling the default kernel changes no entry', () => {
    const old = state('6.1.0-56', '6.1.0-50');
    expect(nextBootState(old, kernelFiles('6.1.0-56'), '6.1.0-50')).toEqual(old);
  });

  it('installing the kernel kept as previous makes it the default with no second choice', () => {
    const next = nextBootState(state('6.1.0-56', '6.1.0-50'), kernelFiles('6.1.0-50'), '6.1.0-50');
    expect(next.kernel.release).toBe('6.1.0-50');
    expect(next.previousKernel).toBeUndefined();
    expect(droppedKernels(state('6.1.0-56', '6.1.0-50'), next)).toEqual(['6.1.0-56']);
  });
});

describe('the boot record on the ESP', () => {
  it('reads back what it writes', () => {
    const s = state('6.1.0-56', '6.1.0-50');
    expect(parseBootState(formatBootState(s), 'test')).toEqual(s);
  });

  it.each([
    ['not JSON', '{', /not JSON/],
    ['another format', JSON.stringify({ ...state('1'), format: 'other 1' }), /not a cairn boot record/],
    ['a kernel without files', JSON.stringify({ ...state('1'), kernel: { release: '1' } }), /names its kernels wrongly/],
    ['a kernel path GRUB cannot use', JSON.stringify({ ...state('1'), kernel: { release: '1', kernel: 'vmlinuz', initrd: '/i' } }), /not a file path on the ESP/],
  ])('refuses %s', (_, text, message) => {
    expect(() => parseBootState(text, 'test')).toThrow(message);
  });
});

describe('the menu with a previous kernel', () => {
  const s = state('6.1.0-56', '6.1.0-50');
  const menu = buildMenu([], { ...s.settings, kernel: s.kernel.kernel, initrd: s.kernel.initrd }, { timeoutSeconds: 3, previousKernel: s.previousKernel });

  it('boots the new kernel from every state entry and the old one from its own entry, last', () => {
    const text = renderGrubConfig(menu);
    // The fifth, defined only once the newest state has used its tries, is the rollback's (boot-tries.test.ts).
    const entries = text.split('menuentry ').slice(1);
    expect(entries).toHaveLength(5);
    expect(entries[4]).toContain('cairn-rollback');
    for (const e of entries.slice(0, 3)) expect(e).toContain('linux /vmlinuz-6.1.0-56 ');
    expect(entries[3]).toContain(`'${TITLES.previousKernel('6.1.0-50')}'`);
    expect(entries[3]).toContain(PREVIOUS_KERNEL_ID);
    expect(entries[3]).toMatch(/linux \/vmlinuz-6\.1\.0-50 cairn\.boot=default /);
    expect(entries[3]).toContain('initrd /initramfs-6.1.0-50');
    expect(menu.defaultId).toBe('cairn-default');
  });
});

describe("apt's list of packages for the hook", () => {
  it('takes the .deb lines and leaves the rest', () => {
    expect(debsFromHookInput('/var/cache/apt/archives/a_1_amd64.deb\n**CONFIGURE**\n\n/repo/./b_2_all.deb\n')).toEqual([
      '/var/cache/apt/archives/a_1_amd64.deb',
      '/repo/./b_2_all.deb',
    ]);
  });
});
