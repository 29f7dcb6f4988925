import { readdir, readFile, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { bootTriesOf, readTries } from './boot/counting.js';
import type { Tries } from './boot/tries.js';
import { readBootState } from './esp/bootState.js';
import type { Esp } from './esp/esp.js';
import { DATA, modulesImageRelease } from './names.js';
import type { BootRecord } from './bootRecord.js';
import { gatherUnsaved, unsavedSummary } from './changes/unsaved.js';
import type { Context } from './context.js';
import { readHeld } from './state/held.js';
import { bootName, identity, listStates, nextDefaultBoot } from './state/states.js';

export interface StateStatus {
  boot: string;
  name: string;
  bytes: number;
  created: number | undefined;
  intact: boolean;
  problem?: string;
  id?: string;
  /** Why the state is held (a boot fell back past it), until the user acts. */
  held?: string;
  /** A checkpoint chain's tip: the checkpoints over its base (the tip included), and how many links from the base on are on the data partition. */
  checkpoints?: number;
  linksPresent?: number;
}

export interface Status {
  bootRecord: BootRecord | undefined;
  upper: { dir: string; usedBytes: number; totalBytes: number } | undefined;
  dataDir: string;
  states: StateStatus[];
  /** The boot name a default boot will unpack, or `clean` when no state is intact. */
  nextDefaultBoot: string;
  /** What the record of a failed shutdown save says, until a save succeeds. */
  lastSaveFailed?: string;
  kernels?: KernelStatus;
  /** What is unsaved (src/changes): counted only when asked, since it walks the upper layer and the baseline state. */
  unsaved?: UnsavedStatus;
}

export type UnsavedStatus =
  | { since: string; added: number; changed: number; removed: number; bytes: number; line: string }
  | { problem: string };

export interface KernelStatus {
  /** What the menu boots by default, and the kernel it keeps after an update. */
  default: string;
  previous?: string;
  /** Kernel images on the ESP and modules images on the data partition, by release. */
  onEsp: string[];
  modulesImages: string[];
  /** The GRUB version of each platform's boot files, where the boot record knows it. */
  grub?: Partial<Record<string, string>>;
  /** Boot counting: the tries a stick gives, and what is on trial with the tries it has left (src/boot/tries.ts). */
  counting?: { tries: number; left: Tries; problem?: string };
  /** Why the ESP could not be read, when it could not. */
  problem?: string;
}

/** The kernels on the stick: the ESP's boot record and files, the data partition's modules images. */
export async function gatherKernels(esp: Esp, dataDir: string): Promise<KernelStatus> {
  const modulesImages = (await readdir(dataDir).catch(() => [] as string[]))
    .map(modulesImageRelease)
    .filter((r): r is string => r !== undefined)
    .sort();
  try {
    const state = await readBootState(esp);
    const onEsp = (await esp.list()).map((n) => /^vmlinuz-(.+)$/i.exec(n)?.[1]).filter((r): r is string => r !== undefined).sort();
    const tries = bootTriesOf(state);
    const counting = await readTries(esp).then(
      (left) => ({ tries, left }),
      (e: Error) => ({ tries, left: {}, problem: e.message }),
    );
    return {
      default: state.kernel.release,
      ...(state.previousKernel ? { previous: state.previousKernel.release } : {}),
      onEsp,
      modulesImages,
      ...(state.grub ? { grub: state.grub } : {}),
      counting,
    };
  } catch (e) {
    return { default: 'unknown', onEsp: [], modulesImages, problem: (e as Error).message };
  }
}

/** What `cairn status` shows. `full` checks every image's checksum (reads them whole). */
export async function gatherStatus(ctx: Context, options: { full: boolean; esp?: Esp; unsaved?: { lowerDir?: string } }): Promise<Status> {
  const states = await listStates(ctx.dataDir, { full: options.full });
  const held = new Map((await readHeld(ctx.dataDir)).map((h) => [h.identity, h.reason]));
  const next = nextDefaultBoot(states);
  return {
    bootRecord: ctx.bootRecord,
    upper: await usage(ctx.upperDir),
    dataDir: ctx.dataDir,
    states: states.map((s) => ({
      boot: bootName(s),
      name: s.name,
      bytes: s.size,
      created: s.check.seal?.created,
      intact: s.check.ok,
      ...(s.check.ok ? {} : { problem: s.check.problem }),
      id: s.check.seal?.id,
      ...(s.chain ? { checkpoints: s.chain.files.length - 1, linksPresent: s.chain.present } : {}),
      ...(held.has(identity(s)) ? { held: held.get(identity(s)) } : {}),
    })),
    nextDefaultBoot: next ? bootName(next) : 'clean',
    lastSaveFailed: (await readFile(join(ctx.dataDir, DATA.saveFailed), 'utf8').catch(() => undefined))?.trim(),
    ...(options.esp ? { kernels: await gatherKernels(options.esp, ctx.dataDir) } : {}),
    ...(options.unsaved ? { unsaved: await unsavedStatus(ctx, options.unsaved.lowerDir) } : {}),
  };
}

async function usage(dir: string): Promise<Status['upper']> {
  const s = await statfs(dir).catch(() => undefined);
  if (!s) return undefined;
  return { dir, usedBytes: (s.blocks - s.bfree) * s.bsize, totalBytes: s.blocks * s.bsize };
}

/** The counts of `cairn diff`; a failure to tell is shown, not fatal: the rest of the status stands. */
async function unsavedStatus(ctx: Context, lowerDir: string | undefined): Promise<UnsavedStatus> {
  try {
    const u = await gatherUnsaved(ctx, lowerDir);
    return { since: u.baseline.label, added: u.added, changed: u.changed, removed: u.removed, bytes: u.bytes, line: unsavedSummary(u) };
  } catch (e) {
    return { problem: (e as Error).message };
  }
}
