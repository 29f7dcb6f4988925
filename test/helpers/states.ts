import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { checkIntegrity } from '../../src/state/seal.js';
import { catFromImage } from './system.js';

/** What a crash check needs to know of a data partition: each state's marker, if intact. */
export interface Snapshot {
  newest?: string;
  backup?: string;
  generations: string[];
  /** Names that are neither states nor expected leftovers. */
  stray: string[];
}

/** Reads the marker of every intact state; a damaged one reads as "DAMAGED". */
export async function snapshot(data: string): Promise<Snapshot> {
  const markerOf = async (name: string) => {
    const path = join(data, name);
    if (!existsSync(path)) return undefined;
    const check = await checkIntegrity(path);
    return check.ok ? catFromImage(path, 'marker') : `DAMAGED (${check.problem})`;
  };
  const names = readdirSync(data);
  const gens = names.filter((n) => /^upperfs-gen-\d+\.squashfs$/.test(n));
  const known = new Set(['lost+found', 'upperfs.squashfs', 'upperfs-backup.squashfs', 'upperfs.squashfs.tmp', 'upperfs-backup.squashfs.next', '.cairn-save.lock', '.cairn-save.owner', ...gens]);
  return {
    newest: await markerOf('upperfs.squashfs'),
    backup: await markerOf('upperfs-backup.squashfs'),
    generations: (await Promise.all(gens.map(markerOf))).filter((m): m is string => m !== undefined).sort(),
    // A lock being made or removed (src/lib/lock.ts) when a kill landed: the next save removes it.
    stray: names.filter((n) => !known.has(n) && !/^\.cairn-save\.lock\.[^.]+\.[1-9][0-9]*\.[0-9]+\.[0-9a-f]{16}$/.test(n)),
  };
}
