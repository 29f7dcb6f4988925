import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * The installed-package database, `<root>/lib/apk/db/installed`: one block
 * of `X:value` lines per package, blank-line separated, in the APKINDEX
 * letters (P name, V version, C identity). The wrapper reads it to check
 * that apk installed the repacked packages it signed, not upstream's.
 */

export interface InstalledPackage {
  name: string;
  version: string;
  identity: string;
}

export const INSTALLED_DB = 'lib/apk/db/installed';

export function parseInstalled(text: string): Map<string, InstalledPackage> {
  const out = new Map<string, InstalledPackage>();
  for (const block of text.split(/\n\s*\n/)) {
    const field = (k: string) => block.split('\n').find((l) => l.startsWith(`${k}:`))?.slice(2);
    const name = field('P');
    if (!name) continue;
    out.set(name, { name, version: field('V') ?? '', identity: field('C') ?? '' });
  }
  return out;
}

export async function readInstalled(root: string): Promise<Map<string, InstalledPackage>> {
  try {
    return parseInstalled(await readFile(join(root, INSTALLED_DB), 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
    throw e;
  }
}

/**
 * Whether an installed kernel package ships `release`: each of Alpine's
 * kernel packages (repacked by cairn or not) installs
 * /usr/share/kernel/<flavor>/kernel.release, which apk removes with it.
 */
export async function kernelInstalled(root: string, release: string): Promise<boolean> {
  const dir = join(root, 'usr/share/kernel');
  for (const flavor of await readdir(dir).catch(() => [] as string[])) {
    const text = await readFile(join(dir, flavor, 'kernel.release'), 'utf8').catch(() => '');
    if (text.trim() === release) return true;
  }
  return false;
}
