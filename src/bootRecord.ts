import { readFile } from 'node:fs/promises';
import type { Moment } from './changes/baseline.js';
import { UsageError } from './lib/errors.js';

/** How this session booted, as the initramfs wrote it (docs/state-format.md). */
export interface BootRecord {
  requested: string;
  /** `default`, `backup`, `gen-<n>` or `clean`. */
  used: string;
  /** The seal id of the state unpacked; empty after a clean boot. */
  stateId: string;
  fallback: string;
  /** Identities (seal ids, or ino:<inode>) of the states the boot fell back past; the tip of a chain cut short among them. */
  skipped: string[];
  /** How many checkpoint deltas were applied over the base; 0 for a whole state, a clean boot or an older initramfs. */
  chain: number;
  /** File names of the chain's links left out because one was missing or damaged (the first of them ended the chain); empty when none. */
  chainDropped: string[];
  /** What the check before the data partition's mount found: `clean`, `repaired by ...`, `errors left (...); mounted read-only` or `not checked (...)`; empty from an older initramfs. */
  dataCheck: string;
  /** What the data partition's growth to fill the stick did this boot (`partition grown from ... MiB to ... MiB`, `off (cairn.grow=0)`, ...); empty when there was nothing to grow. */
  grow: string;
  /** `state` when GRUB booted the backup because the newest state used its tries (boot counting); empty otherwise. */
  rollback: string;
  upper: string;
  upperSize: number | undefined;
  /** When the upper layer had been filled (the record's writing), by the wall clock and the time since boot; undefined from an older initramfs. `cairn diff` reads the contents of files changed since. */
  unpacked: Moment | undefined;
  kernel: string;
  session: string;
}

export function parseBootRecord(text: string, source: string): BootRecord {
  const map = new Map<string, string>();
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) map.set(line.slice(0, eq).trim(), line.slice(eq + 1).trim());
  }
  const used = map.get('used');
  if (!used || !/^(default|backup|clean|gen-[1-9][0-9]*)$/.test(used)) {
    throw new UsageError(`${source} is not a cairn boot record: "used" is ${used ? `"${used}"` : 'missing'}`);
  }
  const size = Number(map.get('upper_size'));
  const unpackedAt = Number(map.get('unpacked_at') || NaN);
  const unpackedUptime = Number(map.get('unpacked_uptime') || NaN);
  return {
    requested: map.get('requested') ?? used,
    used,
    stateId: map.get('state_id') ?? '',
    fallback: map.get('fallback') ?? '',
    skipped: (map.get('skipped') ?? '').split(/\s+/).filter(Boolean),
    chain: /^[0-9]+$/.test(map.get('chain') ?? '') ? Number(map.get('chain')) : 0,
    chainDropped: (map.get('chain_dropped') ?? '').split(/\s+/).filter(Boolean),
    dataCheck: map.get('data_check') ?? '',
    grow: map.get('grow') ?? '',
    rollback: map.get('rollback') ?? '',
    upper: map.get('upper') ?? '',
    upperSize: Number.isFinite(size) && size > 0 ? size : undefined,
    unpacked:
      Number.isFinite(unpackedAt) && Number.isFinite(unpackedUptime) ? { wallMs: unpackedAt * 1000, uptimeS: unpackedUptime } : undefined,
    kernel: map.get('kernel') ?? '',
    session: map.get('session') ?? '',
  };
}

/** The record, or undefined outside a booted cairn system. */
export async function readBootRecord(path: string): Promise<BootRecord | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  return parseBootRecord(text, path);
}

/** The kernel's id for this boot: states saved in it carry it. */
export async function currentSession(): Promise<string> {
  try {
    return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
  } catch {
    return '';
  }
}
