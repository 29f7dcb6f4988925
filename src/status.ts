import { statfs } from 'node:fs/promises';
import type { BootRecord } from './bootRecord.js';
import type { Context } from './context.js';
import { bootName, listStates, nextDefaultBoot } from './state/states.js';

export interface StateStatus {
  boot: string;
  name: string;
  bytes: number;
  created: number | undefined;
  intact: boolean;
  problem?: string;
  id?: string;
}

export interface Status {
  bootRecord: BootRecord | undefined;
  upper: { dir: string; usedBytes: number; totalBytes: number } | undefined;
  dataDir: string;
  states: StateStatus[];
  /** The boot name a default boot will unpack, or `clean` when no state is intact. */
  nextDefaultBoot: string;
}

/** What `cairn status` shows. `full` checks every image's checksum (reads them whole). */
export async function gatherStatus(ctx: Context, options: { full: boolean }): Promise<Status> {
  const states = await listStates(ctx.dataDir, { full: options.full });
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
    })),
    nextDefaultBoot: next ? bootName(next) : 'clean',
  };
}

async function usage(dir: string): Promise<Status['upper']> {
  const s = await statfs(dir).catch(() => undefined);
  if (!s) return undefined;
  return { dir, usedBytes: (s.blocks - s.bfree) * s.bsize, totalBytes: s.blocks * s.bsize };
}
