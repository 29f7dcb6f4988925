import { readFile } from 'node:fs/promises';
import { UsageError } from './lib/errors.js';
import { RUNTIME } from './names.js';
import { DEFAULT_EXCLUDES, compileExcludes } from './save/exclude.js';

/**
 * /etc/cairn/cairn.conf: `key=value` lines, `#` comments. sh-compatible on
 * purpose, so boot scripts can read it with `grep` too. Flags override it.
 */
export interface Config {
  upperDir: string;
  dataDir: string;
  /** Older states kept beside the newest and the backup (at least 1). */
  generations: number;
  compression: 'zstd' | 'gzip' | 'xz' | 'lz4' | 'lzo';
  /** zstd (1-22) or gzip (1-9) level; ignored by xz, lz4 and lzo; undefined leaves mksquashfs's default. */
  compressionLevel?: number;
  /** Memory mksquashfs may use, as it takes it (`256M`): RAM is what holds the system. */
  mksquashfsMem: string;
  excludes: string[];
  /** Seconds a save waits for another save to finish. */
  lockWait: number;
  /** Minutes between the timer's checkpoints (openrc/cairn-checkpoint); 0 turns the timer off. */
  checkpointInterval: number;
  /** Links of deltas a chain may reach before a save writes a whole state. */
  chainMax: number;
  /** The deltas' bytes over the base's above which a save writes a whole state. */
  chainRatio: number;
}

export const DEFAULTS: Config = {
  upperDir: RUNTIME.upperDir,
  dataDir: RUNTIME.dataDir,
  generations: 2,
  compression: 'zstd',
  compressionLevel: 3,
  mksquashfsMem: '256M',
  excludes: [...DEFAULT_EXCLUDES],
  lockWait: 120,
  checkpointInterval: 10,
  chainMax: 8,
  chainRatio: 0.5,
};

const COMPRESSORS = ['zstd', 'gzip', 'xz', 'lz4', 'lzo'] as const;

export function parseConfig(text: string, source: string): Config {
  const config: Config = { ...DEFAULTS, excludes: [...DEFAULTS.excludes] };
  let excludesReset = false;
  const added: string[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const where = `${source}:${i + 1}`;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new UsageError(`${where}: expected key=value, found "${line}"`);
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1');
    switch (key) {
      case 'upper_dir':
        config.upperDir = absolute(value, where);
        break;
      case 'data_dir':
        config.dataDir = absolute(value, where);
        break;
      case 'generations':
        config.generations = integer(value, where, 1, 100);
        break;
      case 'compression':
        if (!(COMPRESSORS as readonly string[]).includes(value)) {
          throw new UsageError(`${where}: compression "${value}" is not one of ${COMPRESSORS.join(', ')}`);
        }
        config.compression = value as Config['compression'];
        break;
      case 'compression_level':
        config.compressionLevel = value === '' ? undefined : integer(value, where, 1, 22);
        break;
      case 'mksquashfs_mem':
        if (!/^[0-9]+[KMG]?$/.test(value)) throw new UsageError(`${where}: mksquashfs_mem "${value}" is not a size like 256M`);
        config.mksquashfsMem = value;
        break;
      case 'exclude':
        // The first exclude line replaces the defaults, so a user can drop one.
        if (!excludesReset) config.excludes = [];
        excludesReset = true;
        if (value) config.excludes.push(value);
        break;
      case 'exclude_add':
        added.push(value);
        break;
      case 'lock_wait':
        config.lockWait = integer(value, where, 0, 86_400);
        break;
      case 'checkpoint_interval':
        config.checkpointInterval = integer(value, where, 0, 1440);
        break;
      case 'chain_max':
        config.chainMax = integer(value, where, 1, 64);
        break;
      case 'chain_ratio':
        config.chainRatio = decimal(value, where, 10);
        break;
      default:
        throw new UsageError(`${where}: unknown setting "${key}"`);
    }
  });
  config.excludes.push(...added);
  if (config.compression === 'gzip' && (config.compressionLevel ?? 0) > 9) {
    throw new UsageError(`${source}: gzip takes a compression_level from 1 to 9, not ${config.compressionLevel}`);
  }
  try {
    compileExcludes(config.excludes);
  } catch (e) {
    throw new UsageError(`${source}: ${(e as Error).message}`);
  }
  return config;
}

/** Reads the config file; a missing file means the defaults. */
export async function loadConfig(path: string = RUNTIME.config, required = false): Promise<Config> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && !required) return { ...DEFAULTS, excludes: [...DEFAULTS.excludes] };
    throw new UsageError(`cannot read config ${path}: ${(e as Error).message}`);
  }
  return parseConfig(text, path);
}

function integer(value: string, where: string, min: number, max: number): number {
  const n = Number(value);
  if (!/^[0-9]+$/.test(value) || n < min || n > max) {
    throw new UsageError(`${where}: "${value}" must be a whole number from ${min} to ${max}`);
  }
  return n;
}

/** A decimal above 0 and at most MAX, written plainly (0.5, 2, .25): no sign, exponent or hex. */
function decimal(value: string, where: string, max: number): number {
  const n = Number(value);
  if (!/^([0-9]+(\.[0-9]*)?|\.[0-9]+)$/.test(value) || !(n > 0) || n > max) {
    throw new UsageError(`${where}: "${value}" must be a decimal above 0 and at most ${max}`);
  }
  return n;
}

function absolute(value: string, where: string): string {
  if (!value.startsWith('/')) throw new UsageError(`${where}: "${value}" must be an absolute path`);
  return value;
}
