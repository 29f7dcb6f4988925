import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { CairnError } from '../../lib/errors.js';
import { run } from '../../lib/run.js';

/** What apt hands the hook: a .deb file and what its control file says. */
export interface DebInfo {
  path: string;
  name: string;
  version: string;
  architecture: string;
}

const DPKG_HINT = 'install dpkg (it comes with every Debian system)';

export async function readDebInfo(path: string): Promise<DebInfo> {
  const r = await run('dpkg-deb', ['--show', '--showformat=${Package}\\t${Version}\\t${Architecture}', path], {
    timeoutMs: 60_000,
    okExitCodes: [2],
    hint: DPKG_HINT,
  });
  const [name, version, architecture] = r.stdout.split('\t');
  if (r.exitCode !== 0 || !name || !version) {
    throw new CairnError(`${path} is not a readable Debian package: ${r.stderr.trim() || 'dpkg-deb could not read its control file'}`);
  }
  return { path, name, version, architecture: architecture ?? '' };
}

/** The paths a .deb would install, without the leading "./" (from dpkg-deb's tar listing). */
export async function debPaths(path: string): Promise<string[]> {
  const r = await run('dpkg-deb', ['--contents', path], { timeoutMs: 600_000, hint: DPKG_HINT });
  const paths: string[] = [];
  for (const line of r.stdout.split('\n')) {
    const m = / \.\/(.*?)(?: -> .*| link to .*)?$/.exec(line);
    if (m?.[1]) paths.push(m[1].replace(/\/$/, ''));
  }
  return paths;
}

/** Unpacks a .deb's files (not its scripts) into a directory. */
export async function unpackDeb(path: string, dir: string): Promise<void> {
  await run('dpkg-deb', ['--extract', path, dir], { timeoutMs: 1800_000, hint: DPKG_HINT });
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
