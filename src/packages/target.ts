import { existsSync } from 'node:fs';
import { release } from 'node:os';
import { armTries } from '../boot/counting.js';
import { writeMenu } from '../esp/bootState.js';
import { Esp } from '../esp/esp.js';
import { loadConfig } from '../config.js';
import { PathError, UsageError } from '../lib/errors.js';
import { run } from '../lib/run.js';
import { defaultInitDir } from '../initramfs/build.js';
import { LABELS } from '../names.js';

/**
 * The stick a package operation changes: its data partition (mounted), its
 * ESP (never mounted: see Esp), the early-boot module for initramfs builds,
 * and the kernel that runs now, whose files are never removed.
 */
export interface SystemTarget {
  dataDir: string;
  esp: Esp;
  initDir: string;
  /** `uname -r` when the target is the running system; undefined for a stick or image worked on from outside. */
  runningKernel?: string;
}

export interface TargetFlags {
  /** The data partition's directory (default: the running system's). */
  data?: string;
  /** The ESP: a block device or a FAT image file (default: found by label). */
  esp?: string;
  initDir?: string;
  /** The kernel taken as running, for a target given by flags. */
  runningKernel?: string;
}

/** The running stick, or the one the flags name. Given --data, nothing is taken from the running system. */
export async function resolveTarget(flags: TargetFlags): Promise<SystemTarget> {
  const running = flags.data === undefined;
  const dataDir = flags.data ?? (await loadConfig()).dataDir;
  if (!existsSync(dataDir)) throw new PathError(dataDir, 'the data partition is not there', running ? 'is this a booted cairn?' : undefined);
  const espDevice = flags.esp ?? (await findEsp());
  if (!existsSync(espDevice)) throw new PathError(espDevice, 'the ESP is not there');
  return {
    dataDir,
    esp: new Esp(espDevice),
    initDir: flags.initDir ?? defaultInitDir(),
    runningKernel: flags.runningKernel ?? (running ? release() : undefined),
  };
}

/**
 * The running stick's menu, rewritten from its boot record and the states
 * now on the data partition. NEWEST says what became of the newest state:
 * a new one is put on trial (boot counting, src/boot), and when none is
 * left nothing is.
 */
export async function refreshMenu(dataDir: string, newest?: 'new' | 'gone'): Promise<void> {
  const esp = new Esp(await findEsp());
  await writeMenu(esp, dataDir);
  if (newest) await armTries(esp, 'state', newest === 'gone' ? 0 : undefined);
}

/** The ESP's device, by the label the image builder gives it. */
export async function findEsp(): Promise<string> {
  const r = await run('blkid', ['-L', LABELS.esp], { timeoutMs: 30_000, okExitCodes: [2], hint: 'install util-linux\'s blkid' });
  const device = r.stdout.trim();
  if (r.exitCode !== 0 || !device) {
    throw new UsageError(`no partition labelled ${LABELS.esp} was found`, { hint: 'pass --esp DEVICE' });
  }
  return device;
}
