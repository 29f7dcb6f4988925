import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

/**
 * What a repository serves, as its package manager first reads it (an
 * index, a Release file): the digest of its bytes, or why it could not be
 * read. A root bootstrapped from a repository is cached under this digest,
 * so it follows the repository's content, not its name.
 */
export type Served = { location: string; sha256: string } | { location: string; problem: string };

/**
 * The first of `locations` that can be read (a local path, a file: URL or
 * an http(s) URL), hashed; the alternatives are tried in the order the
 * package manager tries them (debootstrap: InRelease, then Release).
 */
export async function servedDigest(locations: readonly string[]): Promise<Served> {
  const problems: string[] = [];
  for (const location of locations) {
    try {
      return { location, sha256: createHash('sha256').update(await readServed(location)).digest('hex') };
    } catch (e) {
      problems.push(`${location}: ${(e as Error).message}`);
    }
  }
  return { location: locations[0] ?? '', problem: problems.join('; ') };
}

async function readServed(location: string): Promise<Buffer> {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(location)?.[1]?.toLowerCase();
  if (scheme === undefined) return readFile(location);
  if (scheme === 'file') return readFile(fileURLToPath(location));
  if (scheme !== 'http' && scheme !== 'https') throw new Error(`cairn cannot read ${scheme}: URLs`);
  // Node's fetch ignores http_proxy, which apk and debootstrap honour: a
  // mirror reached only through a proxy reads as unreachable here.
  const res = await fetch(location, { signal: AbortSignal.timeout(60_000) }).catch((e: Error) => {
    throw new Error((e.cause as Error | undefined)?.message ?? e.message);
  });
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  return Buffer.from(await res.arrayBuffer());
}
