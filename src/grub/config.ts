import { stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { writeFileDurably } from '../lib/durable.js';
import { PathError } from '../lib/errors.js';
import { listStates } from '../state/states.js';
import { buildMenu, type BootSettings, type Menu } from './menu.js';
import { renderGrubConfig } from './render.js';

export interface GrubConfigOptions {
  /** The data partition whose states get entries. */
  dataDir: string;
  /** Where grub.cfg goes; undefined returns the text without writing it. */
  output?: string;
  settings: BootSettings;
  timeoutSeconds: number;
  /** The boot name started when the timeout runs out (default: "default"). */
  defaultBoot?: string;
  /** Read whole images to check their checksums, not only their seals. */
  full?: boolean;
}

export interface GrubConfigReport {
  output?: string;
  text: string;
  menu: Menu;
}

/** Lists the states, builds the menu, and writes grub.cfg durably (temp, fsync, rename, fsync dir). */
export async function runGrubConfig(opts: GrubConfigOptions): Promise<GrubConfigReport> {
  await requireDir(opts.dataDir, 'the data partition', 'pass --data DIR, the mounted data partition');
  const states = await listStates(opts.dataDir, { full: opts.full });
  const menu = buildMenu(states, opts.settings, { timeoutSeconds: opts.timeoutSeconds, defaultBoot: opts.defaultBoot });
  const text = renderGrubConfig(menu);
  if (opts.output !== undefined) {
    // A missing directory usually means the ESP is not mounted: writing there
    // would put the menu on the RAM layer, where no boot reads it.
    await requireDir(dirname(opts.output), 'the directory for grub.cfg', 'is the ESP mounted? create the grub directory on it first');
    await writeFileDurably(opts.output, text);
  }
  return { output: opts.output, text, menu };
}

async function requireDir(dir: string, what: string, hint: string): Promise<void> {
  const st = await stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new PathError(dir, `${what} is not a directory`, hint);
}
