import { dirname } from 'node:path';
import { readBootRecord, currentSession, type BootRecord } from './bootRecord.js';
import { loadConfig, type Config } from './config.js';
import { UsageError } from './lib/errors.js';
import { RUNTIME } from './names.js';

export interface GlobalOptions {
  config?: string;
}

export interface SystemOptions {
  upper?: string;
  data?: string;
  bootRecord?: string;
}

export interface Context {
  config: Config;
  upperDir: string;
  dataDir: string;
  bootRecord: BootRecord | undefined;
  session: string;
  /** Whether this runs against the booted system (no --upper/--data). */
  booted: boolean;
  /** The directory of the boot record this session has: its own run directory. */
  runDir: string | undefined;
}

/**
 * Where a command works. With --upper and --data it works on any two
 * directories and, unless --boot-record names one, as if no boot record
 * existed; without them, on the running system as the initramfs set it up.
 */
export async function resolveContext(global: GlobalOptions, opts: SystemOptions, needs: { upper: boolean }): Promise<Context> {
  const config = await loadConfig(global.config ?? RUNTIME.config, global.config !== undefined);
  const session = await currentSession();
  if (needs.upper && (opts.upper === undefined) !== (opts.data === undefined)) {
    throw new UsageError('--upper and --data go together: give both, or neither to use the running system');
  }
  const explicit = opts.data !== undefined;
  const recordPath = opts.bootRecord ?? (explicit ? undefined : RUNTIME.bootRecord);
  const bootRecord = opts.bootRecord
    ? await requireRecord(opts.bootRecord)
    : explicit
      ? undefined
      : await readBootRecord(RUNTIME.bootRecord);
  if (!explicit && !bootRecord && needs.upper) {
    throw new UsageError(`this is not a booted cairn system (no ${RUNTIME.bootRecord})`, {
      hint: 'pass --upper DIR and --data DIR to work on two directories',
    });
  }
  return {
    config,
    upperDir: opts.upper ?? config.upperDir,
    dataDir: opts.data ?? config.dataDir,
    bootRecord,
    session,
    booted: !explicit,
    runDir: bootRecord && recordPath ? dirname(recordPath) : undefined,
  };
}

async function requireRecord(path: string): Promise<BootRecord> {
  const record = await readBootRecord(path);
  if (!record) throw new UsageError(`no boot record at ${path}`);
  return record;
}
