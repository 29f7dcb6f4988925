import { UsageError } from '../lib/errors.js';
import { LABELS } from '../names.js';
import { bootName, type StateFile } from '../state/states.js';
import { DEFAULT_BOOT_TRIES, MAX_BOOT_TRIES, type TrialSubject } from '../boot/tries.js';
import { kernelSafe } from './quote.js';

/**
 * The GRUB menu as data: which entries there are, their titles and ids, and
 * each one's kernel command line. render.ts turns it into GRUB script.
 */

export type UpperType = 'zram' | 'tmpfs';
export type PrimaryConsole = 'serial' | 'screen';

/** How GRUB finds the ESP that holds the kernel and the initramfs. */
export type EspLocator = { by: 'label' | 'uuid'; value: string };

export interface BootSettings {
  /** The kernel and the initramfs, as paths on the ESP ("/vmlinuz-lts"). */
  kernel: string;
  initrd: string;
  esp: EspLocator;
  /** cairn.data: LABEL=..., UUID=... or /dev/... */
  dataSpec: string;
  upper: UpperType;
  /** cairn.upper_size, when set; the initramfs's default otherwise. */
  upperSize?: string;
  serialSpeed: number;
  /** false: cairn.grow=0, the data partition keeps its size on a larger stick (absent: it grows). */
  grow?: boolean;
  /** Which console is /dev/console (the last console= wins): where init's output and prompts go. */
  primaryConsole: PrimaryConsole;
  /**
   * Boot counting (docs/boot.md): the tries GRUB gives a new kernel or a
   * new newest state before it boots the previous kernel or the backup.
   * 0 turns counting off; absent: DEFAULT_BOOT_TRIES.
   */
  bootTries?: number;
}

export interface MenuEntry {
  /** The GRUB id (`set default` names it): cairn-default, cairn-gen-3. */
  id: string;
  title: string;
  /** cairn.boot's value. */
  boot: string;
  /** Why the title carries a mark, if it does. */
  mark?: 'damaged' | 'none saved yet';
  /** The kernel command line, one parameter per word. */
  args: string[];
  /** A kernel other than the menu's (the previous one, kept until the new one has booted). */
  kernel?: string;
  initrd?: string;
  /**
   * What booting this entry tries, in order: GRUB takes a try off the first
   * one that is on trial (grub/grub.cfg.in). The default entry tries a new
   * kernel first and the newest state once the kernel is confirmed.
   */
  counts?: TrialSubject[];
}

/** The entry GRUB boots by itself once the newest state has used its tries: the backup, said so. */
export interface RollbackEntry extends MenuEntry {
  /** The kernel it boots while the default kernel is rolled back too. */
  previousKernel?: KernelFiles;
}

/** A kernel on the ESP: its release and its files there ("/vmlinuz-6.1.0-42-cloud-amd64"). */
export interface KernelFiles {
  release: string;
  kernel: string;
  initrd: string;
}

export interface Menu {
  timeoutSeconds: number;
  serialSpeed: number;
  defaultId: string;
  kernel: string;
  initrd: string;
  esp: EspLocator;
  entries: MenuEntry[];
  /** Tries per new kernel or newest state; 0: no counting. */
  bootTries: number;
  /** Defined by the menu only while the newest state's tries are used up. */
  rollback?: RollbackEntry;
}

/**
 * Titles, stable so that users and tests can pick them over a serial line.
 * A checkpoint chain's note (" [2 checkpoints, newest ...]", chainNote) and
 * a mark (" [damaged]", " [none saved yet]") may follow a title; nothing
 * else about it changes.
 */
export const TITLES = {
  default: 'cairn (newest state)',
  backup: 'cairn (backup state)',
  clean: 'cairn (clean: nothing loaded, nothing saved)',
  generation: (n: number, created: number | undefined) =>
    `cairn (older state ${n}, ${created ? `saved ${shortDate(created)}` : 'date unknown'})`,
  previousKernel: (release: string) => `cairn (newest state, previous kernel ${release})`,
  rollback: 'cairn (backup state: the newest did not come up)',
} as const;

/** The id of the entry that boots the previous kernel. */
export const PREVIOUS_KERNEL_ID = 'cairn-previous-kernel';
/** The id of the entry GRUB boots when the newest state has used its tries. */
export const ROLLBACK_ID = 'cairn-rollback';

/** The GRUB id of the entry that boots with cairn.boot=<boot>. */
export function entryId(boot: string): string {
  return `cairn-${boot}`;
}

/** The state listing as the menu needs it (listStates gives more). */
export type MenuState = Pick<StateFile, 'role' | 'generation' | 'check' | 'chain'>;

/** What a title says of a checkpoint chain's tip: how many checkpoints, and when the newest was written. */
export function chainNote(s: MenuState | undefined): string {
  if (!s?.chain) return '';
  const n = s.chain.files.length - 1;
  const created = s.check.seal?.created;
  return ` [${n} checkpoint${n === 1 ? '' : 's'}${created ? `, newest ${shortDate(created)}` : ''}]`;
}

export const DEFAULT_SETTINGS: BootSettings = {
  kernel: '/vmlinuz-lts',
  initrd: '/initramfs-lts',
  esp: { by: 'label', value: LABELS.esp },
  dataSpec: `LABEL=${LABELS.data}`,
  upper: 'zram',
  serialSpeed: 115200,
  primaryConsole: 'serial',
};

/**
 * The entries: default, backup and clean always, in that order, so that a
 * boot picked by position or by title works on every stick; then one per
 * older generation, newest first. A state that is missing or damaged keeps
 * its entry, marked: the initramfs falls back (default -> backup -> clean,
 * backup or gen-<n> -> clean) and says so on the console.
 */
export function buildMenu(
  states: readonly MenuState[],
  settings: BootSettings,
  options: { timeoutSeconds: number; defaultBoot?: string; previousKernel?: KernelFiles },
): Menu {
  checkSettings(settings);
  const find = (role: MenuState['role']) => states.find((s) => s.role === role);
  const markOf = (s: MenuState | undefined): MenuEntry['mark'] => (!s ? 'none saved yet' : s.check.ok ? undefined : 'damaged');
  const entry = (boot: string, title: string, mark: MenuEntry['mark']): MenuEntry => ({
    id: entryId(boot),
    title: mark ? `${title} [${mark}]` : title,
    boot,
    ...(mark ? { mark } : {}),
    args: kernelArgs(boot, settings),
  });

  const tries = settings.bootTries ?? DEFAULT_BOOT_TRIES;
  const entries = [
    { ...entry('default', TITLES.default + chainNote(find('newest')), markOf(find('newest'))), ...(tries ? { counts: ['kernel', 'state'] as TrialSubject[] } : {}) },
    entry('backup', TITLES.backup + chainNote(find('backup')), markOf(find('backup'))),
    entry('clean', TITLES.clean, undefined),
  ];
  const generations = states
    .filter((s): s is MenuState & { generation: number } => s.role === 'generation' && s.generation !== undefined)
    .sort((a, b) => b.generation - a.generation);
  for (const g of generations) {
    entries.push(entry(bootName(g), TITLES.generation(g.generation, g.check.seal?.created) + chainNote(g), g.check.ok ? undefined : 'damaged'));
  }
  // After a kernel update, the kernel that last booted stays one pick away
  // until the new one has booted once.
  const previous = options.previousKernel;
  if (previous) {
    checkSettings({ ...settings, kernel: previous.kernel, initrd: previous.initrd });
    entries.push({
      ...entry('default', TITLES.previousKernel(previous.release), undefined),
      id: PREVIOUS_KERNEL_ID,
      kernel: previous.kernel,
      initrd: previous.initrd,
      ...(tries ? { counts: ['state'] as TrialSubject[] } : {}),
    });
  }
  // cairn.rollback=state: the initramfs records the backup boot as a
  // fallback from the newest state, which stays held until the user acts.
  const rollback: RollbackEntry | undefined = tries
    ? {
        ...entry('backup', TITLES.rollback, undefined),
        id: ROLLBACK_ID,
        args: [...kernelArgs('backup', settings), 'cairn.rollback=state'],
        ...(previous ? { previousKernel: previous } : {}),
      }
    : undefined;

  const defaultBoot = options.defaultBoot ?? 'default';
  const chosen = entries.find((e) => e.boot === defaultBoot);
  if (!chosen) {
    throw new UsageError(`no menu entry boots "${defaultBoot}"; there are: ${entries.map((e) => e.boot).join(', ')}`);
  }
  return {
    timeoutSeconds: options.timeoutSeconds,
    serialSpeed: settings.serialSpeed,
    defaultId: chosen.id,
    kernel: settings.kernel,
    initrd: settings.initrd,
    esp: settings.esp,
    entries,
    bootTries: tries,
    ...(rollback ? { rollback } : {}),
  };
}

/** Seconds a panicking kernel shows its message before it restarts, when boots are counted. */
export const PANIC_REBOOT_SECONDS = 10;

/** The kernel command line of one entry, in the order the initramfs documents it. */
export function kernelArgs(boot: string, settings: BootSettings): string[] {
  const serial = `console=ttyS0,${settings.serialSpeed}`;
  const consoles = settings.primaryConsole === 'serial' ? ['console=tty0', serial] : [serial, 'console=tty0'];
  return [
    `cairn.boot=${boot}`,
    `cairn.upper=${settings.upper}`,
    ...(settings.upperSize ? [`cairn.upper_size=${settings.upperSize}`] : []),
    `cairn.data=${settings.dataSpec}`,
    ...(settings.grow === false ? ['cairn.grow=0'] : []),
    // With boot counting a kernel that panics restarts, and GRUB counts the
    // try; without it, it waits for someone to read the panic.
    ...((settings.bootTries ?? DEFAULT_BOOT_TRIES) > 0 ? [`panic=${PANIC_REBOOT_SECONDS}`] : []),
    ...consoles,
  ];
}

/** Refuses settings the kernel command line or GRUB cannot carry; the message names the value. */
export function checkSettings(s: BootSettings): void {
  for (const [what, value] of [
    ['cairn.data', s.dataSpec],
    ['cairn.upper_size', s.upperSize ?? '1'],
  ] as const) {
    if (!kernelSafe(value)) {
      throw new UsageError(`${what}=${value} cannot go on a kernel command line (no blanks, quotes, backslashes or control characters)`);
    }
  }
  if (!/^(LABEL=.+|UUID=.+|\/dev\/.+)$/.test(s.dataSpec)) {
    throw new UsageError(`cairn.data=${s.dataSpec} is not LABEL=..., UUID=... or /dev/...`);
  }
  if (s.upperSize !== undefined && !isUpperSize(s.upperSize)) {
    throw new UsageError(`cairn.upper_size=${s.upperSize} is not a size like 512M, 2G or 50%`);
  }
  for (const [what, path] of [
    ['kernel', s.kernel],
    ['initramfs', s.initrd],
  ] as const) {
    if (!path.startsWith('/') || path.endsWith('/')) throw new UsageError(`the ${what} "${path}" is not a file path on the ESP (it starts with /)`);
    if (/[\x00-\x1f\x7f]/.test(path)) throw new UsageError(`the ${what} path holds a control character`);
  }
  if (!s.esp.value || /[\x00-\x1f\x7f]/.test(s.esp.value)) throw new UsageError(`the ESP ${s.esp.by} "${s.esp.value}" is empty or holds a control character`);
  if (s.bootTries !== undefined && !(Number.isInteger(s.bootTries) && s.bootTries >= 0 && s.bootTries <= MAX_BOOT_TRIES)) {
    throw new UsageError(`boot tries ${String(s.bootTries)} is not a whole number from 0 (no counting) to ${MAX_BOOT_TRIES}`);
  }
  if (s.grow !== undefined && typeof s.grow !== 'boolean') throw new UsageError(`grow "${String(s.grow)}" is not true or false`);
  if (!Number.isInteger(s.serialSpeed) || s.serialSpeed <= 0) throw new UsageError(`serial speed ${s.serialSpeed} is not a baud rate`);
}

/** The forms initramfs/lib/size.sh accepts: bytes, K/M/G/T (powers of 1024), or 1% to 100%. */
export function isUpperSize(v: string): boolean {
  const m = /^([1-9][0-9]*)([KkMmGgTt%]?)$/.exec(v);
  if (!m) return false;
  const digits = m[1]!.length;
  const unit = m[2]!.toUpperCase();
  if (unit === '%') return digits <= 3 && Number(m[1]) <= 100;
  const longest: Record<string, number> = { '': 18, K: 15, M: 12, G: 9, T: 6 };
  return digits <= longest[unit]!;
}

/** "2024-05-01 12:00 UTC": short enough for an 80-column menu. */
export function shortDate(unixSeconds: number): string {
  return new Date(unixSeconds * 1000).toISOString().replace('T', ' ').replace(/:\d\d\.\d+Z$/, ' UTC');
}
