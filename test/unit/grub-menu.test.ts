import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/lib/errors.js';
import {
  buildMenu,
  DEFAULT_SETTINGS,
  isUpperSize,
  kernelArgs,
  shortDate,
  TITLES,
  type BootSettings,
  type MenuState,
} from '../../src/grub/menu.js';
import type { Seal } from '../../src/state/seal.js';

const seal = (created: number): Seal => ({ size: 1000, sha256: 'a'.repeat(64), id: `id-${created}`, parent: '', session: '', created, files: 3, space: 0 });
const intact = (role: MenuState['role'], created = 1_700_000_000, generation?: number): MenuState => ({
  role,
  ...(generation === undefined ? {} : { generation }),
  check: { ok: true, seal: seal(created), fileSize: 5096 },
});
const damaged = (role: MenuState['role'], withSeal: boolean, generation?: number): MenuState => ({
  role,
  ...(generation === undefined ? {} : { generation }),
  check: { ok: false, problem: 'checksum mismatch: the image is corrupt', fileSize: 5096, ...(withSeal ? { seal: seal(1_700_000_000) } : {}) },
});
const menu = (states: MenuState[], settings: Partial<BootSettings> = {}, defaultBoot?: string) =>
  buildMenu(states, { ...DEFAULT_SETTINGS, ...settings }, { timeoutSeconds: 3, defaultBoot });

describe('buildMenu', () => {
  it('says how many checkpoints a state that is a chain\'s tip has, and when the newest was saved; a whole state says nothing of it', () => {
    const tip = (role: MenuState['role'], n: number, generation?: number): MenuState => ({
      ...intact(role, 1_765_000_000, generation),
      chain: { files: Array.from({ length: n + 1 }, (_, i) => `/persist/checkpoints/${i}.squashfs`), present: n + 1 },
    });
    const m = menu([tip('newest', 3), intact('backup'), tip('generation', 1, 4)]);
    expect(m.entries.map((e) => e.title)).toEqual([
      `cairn (newest state) [3 checkpoints, newest ${shortDate(1_765_000_000)}]`,
      'cairn (backup state)',
      'cairn (clean: nothing loaded, nothing saved)',
      `${TITLES.generation(4, 1_765_000_000)} [1 checkpoint, newest ${shortDate(1_765_000_000)}]`,
    ]);
  });

  it('on a new stick: default, backup and clean, the first two marked as not saved yet', () => {
    const m = menu([]);
    expect(m.entries.map((e) => [e.id, e.boot, e.title])).toEqual([
      ['cairn-default', 'default', 'cairn (newest state) [none saved yet]'],
      ['cairn-backup', 'backup', 'cairn (backup state) [none saved yet]'],
      ['cairn-clean', 'clean', 'cairn (clean: nothing loaded, nothing saved)'],
    ]);
    expect(m.defaultId).toBe('cairn-default');
    expect(m.timeoutSeconds).toBe(3);
  });

  type Kind = 'absent' | 'intact' | 'damaged';
  const kinds: Kind[] = ['absent', 'intact', 'damaged'];
  const cases = kinds.flatMap((newest) => kinds.map((backup) => [newest, backup] as const));
  const stateOf = (role: MenuState['role'], k: Kind) => (k === 'absent' ? [] : k === 'intact' ? [intact(role)] : [damaged(role, true)]);
  const suffix = (k: Kind) => (k === 'absent' ? ' [none saved yet]' : k === 'damaged' ? ' [damaged]' : '');

  it.each(cases)('newest %s, backup %s: the same three entries, marked by what is there', (newest, backup) => {
    const m = menu([...stateOf('newest', newest), ...stateOf('backup', backup)]);
    expect(m.entries.map((e) => e.title)).toEqual([
      `${TITLES.default}${suffix(newest)}`,
      `${TITLES.backup}${suffix(backup)}`,
      TITLES.clean,
    ]);
    expect(m.entries.map((e) => e.boot)).toEqual(['default', 'backup', 'clean']);
    // Every entry stays bootable: the initramfs falls back on its own.
    for (const e of m.entries) expect(e.args[0]).toBe(`cairn.boot=${e.boot}`);
  });

  it('adds older generations after clean, newest first, dated from their seals', () => {
    const m = menu([
      intact('newest'),
      intact('generation', Date.UTC(2024, 0, 2, 3, 4, 5) / 1000, 2),
      intact('backup'),
      intact('generation', Date.UTC(2024, 4, 1, 12, 30) / 1000, 10),
      intact('generation', Date.UTC(2023, 11, 31, 23, 59) / 1000, 1),
    ]);
    expect(m.entries.map((e) => [e.id, e.title])).toEqual([
      ['cairn-default', 'cairn (newest state)'],
      ['cairn-backup', 'cairn (backup state)'],
      ['cairn-clean', 'cairn (clean: nothing loaded, nothing saved)'],
      ['cairn-gen-10', 'cairn (older state 10, saved 2024-05-01 12:30 UTC)'],
      ['cairn-gen-2', 'cairn (older state 2, saved 2024-01-02 03:04 UTC)'],
      ['cairn-gen-1', 'cairn (older state 1, saved 2023-12-31 23:59 UTC)'],
    ]);
    expect(m.entries.slice(3).map((e) => e.args[0])).toEqual(['cairn.boot=gen-10', 'cairn.boot=gen-2', 'cairn.boot=gen-1']);
  });

  it('marks a damaged generation, with its date when the seal is readable and without when not', () => {
    const m = menu([damaged('generation', true, 3), damaged('generation', false, 2), intact('generation', 1_700_000_000, 1)]);
    expect(m.entries.slice(3).map((e) => [e.title, e.mark])).toEqual([
      ['cairn (older state 3, saved 2023-11-14 22:13 UTC) [damaged]', 'damaged'],
      ['cairn (older state 2, date unknown) [damaged]', 'damaged'],
      ['cairn (older state 1, saved 2023-11-14 22:13 UTC)', undefined],
    ]);
  });

  it('sets the default by id, to any entry there is', () => {
    expect(menu([intact('generation', 1, 4)], {}, 'gen-4').defaultId).toBe('cairn-gen-4');
    expect(menu([], {}, 'clean').defaultId).toBe('cairn-clean');
    expect(() => menu([], {}, 'gen-4')).toThrow(UsageError);
    expect(() => menu([], {}, 'gen-4')).toThrow(/no menu entry boots "gen-4"; there are: default, backup, clean/);
  });

  it('gives every entry the same kernel, initramfs and ESP', () => {
    const m = menu([], { kernel: '/vmlinuz-virt', initrd: '/initramfs-virt', esp: { by: 'uuid', value: '1234-ABCD' } });
    expect([m.kernel, m.initrd, m.esp]).toEqual(['/vmlinuz-virt', '/initramfs-virt', { by: 'uuid', value: '1234-ABCD' }]);
  });
});

describe('kernelArgs', () => {
  it('puts cairn.boot, cairn.upper and cairn.data first, then the screen and the serial port (serial last: /dev/console)', () => {
    expect(kernelArgs('gen-3', DEFAULT_SETTINGS)).toEqual([
      'cairn.boot=gen-3',
      'cairn.upper=zram',
      'cairn.data=LABEL=cairn-data',
      'panic=10',
      'console=tty0',
      'console=ttyS0,115200',
    ]);
  });

  it('adds cairn.upper_size when given, and puts the screen last when it is the primary console', () => {
    expect(
      kernelArgs('backup', {
        ...DEFAULT_SETTINGS,
        upper: 'tmpfs',
        upperSize: '2G',
        dataSpec: 'UUID=0b7c3f7e-2d5e',
        serialSpeed: 9600,
        primaryConsole: 'screen',
      }),
    ).toEqual(['cairn.boot=backup', 'cairn.upper=tmpfs', 'cairn.upper_size=2G', 'cairn.data=UUID=0b7c3f7e-2d5e', 'panic=10', 'console=ttyS0,9600', 'console=tty0']);
  });

  it('adds cairn.grow=0 to every entry of a stick built with --no-grow, and nothing when it grows', () => {
    expect(kernelArgs('default', { ...DEFAULT_SETTINGS, grow: false })).toContain('cairn.grow=0');
    expect(kernelArgs('default', { ...DEFAULT_SETTINGS, grow: true }).join(' ')).not.toContain('cairn.grow');
    for (const e of menu([intact('newest'), intact('backup')], { grow: false }).entries) expect(e.args).toContain('cairn.grow=0');
  });
});

describe('settings that cannot be carried are refused', () => {
  it.each([
    [{ dataSpec: 'LABEL=my data' }, /cannot go on a kernel command line/],
    [{ dataSpec: "LABEL=it's" }, /cannot go on a kernel command line/],
    [{ dataSpec: 'LABEL=a\\b' }, /cannot go on a kernel command line/],
    [{ dataSpec: 'LABEL=a\nb' }, /cannot go on a kernel command line/],
    [{ dataSpec: 'cairn-data' }, /not LABEL=\.\.\., UUID=\.\.\. or \/dev\//],
    [{ dataSpec: 'LABEL=' }, /not LABEL=/],
    [{ upperSize: '2 G' }, /cannot go on a kernel command line/],
    [{ upperSize: '150%' }, /not a size/],
    [{ upperSize: '0' }, /not a size/],
    [{ kernel: 'vmlinuz' }, /not a file path on the ESP/],
    [{ initrd: '/boot/' }, /not a file path on the ESP/],
    [{ kernel: '/vmlinuz\n}' }, /control character/],
    [{ esp: { by: 'label' as const, value: '' } }, /ESP label/],
    [{ esp: { by: 'label' as const, value: 'A\nB' } }, /control character/],
    [{ grow: 'no' as unknown as boolean }, /grow "no" is not true or false/],
  ])('%j', (over, message) => {
    expect(() => menu([], over)).toThrow(UsageError);
    expect(() => menu([], over)).toThrow(message);
  });
});

describe('isUpperSize (as initramfs/lib/size.sh reads it)', () => {
  it.each(['1', '512M', '2G', '2g', '1T', '100%', '1%', '999999999999999999', '999999999G'])('accepts %s', (v) => {
    expect(isUpperSize(v)).toBe(true);
  });
  it.each(['', '0', '0M', '05M', '101%', '1000%', '2GB', '-1', '1.5G', '9999999999G', '1e3'])('refuses %j', (v) => {
    expect(isUpperSize(v)).toBe(false);
  });
});

describe('shortDate', () => {
  it('is minutes in UTC', () => {
    expect(shortDate(0)).toBe('1970-01-01 00:00 UTC');
    expect(shortDate(1_700_000_000)).toBe('2023-11-14 22:13 UTC');
  });
});
