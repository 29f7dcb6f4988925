/**
 * The kernel the VM tests boot: Debian's cloud kernel, fetched from Debian's
 * archive with apt-get download into a cache outside the repository
 * ($CAIRN_TEST_CACHE, default /var/cache/cairn-test), unpacked with dpkg-deb
 * and indexed with depmod as the package's own install would. A cache that
 * holds the current version is used as it is; an empty one is filled.
 */
import { execa } from 'execa';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';

export const CACHE = process.env.CAIRN_TEST_CACHE ?? '/var/cache/cairn-test';
const META = 'linux-image-cloud-amd64';

export interface TestKernel {
  version: string;
  vmlinuz: string;
  /** Holds lib/modules/<version>: what --modules-dir takes. */
  root: string;
}

/** The versioned package the meta-package points at now, e.g. linux-image-6.1.0-56-cloud-amd64. */
async function currentPackage(): Promise<string> {
  const r = await execa('apt-cache', ['depends', META], { reject: false });
  const m = /Depends:\s+(linux-image-[0-9][^\s]*-cloud-amd64)/.exec(r.stdout);
  if (r.exitCode !== 0 || !m) {
    throw new Error(`cannot resolve ${META} with apt-cache depends (run apt-get update?): ${r.stderr || r.stdout}`);
  }
  return m[1]!;
}

/** The cloud kernel's .deb from Debian's archive, downloaded once into the cache. */
export async function cloudKernelDeb(): Promise<{ pkg: string; version: string; deb: string }> {
  const pkg = await currentPackage();
  return { pkg, version: pkg.replace(/^linux-image-/, ''), deb: await cachedDeb(pkg) };
}

/** A package's .deb from Debian's archive (a given version, or apt's candidate), downloaded once into the cache. */
export async function cachedDeb(pkg: string, version?: string): Promise<string> {
  await mkdir(CACHE, { recursive: true });
  // apt-get download names files <pkg>_<version with : as %3a>_<arch>.deb.
  const stem = `${pkg}_${version ? `${version.replace(/:/g, '%3a')}_` : ''}`;
  const find = () => readdirSync(CACHE).find((f) => f.startsWith(stem) && f.endsWith('.deb'));
  if (!find()) await execa('apt-get', ['download', version ? `${pkg}=${version}` : pkg], { cwd: CACHE });
  const deb = find();
  if (!deb) throw new Error(`apt-get download ${pkg} left no .deb in ${CACHE}`);
  return join(CACHE, deb);
}

export async function debianCloudKernel(): Promise<TestKernel> {
  const { pkg, version, deb } = await cloudKernelDeb();
  const root = join(CACHE, pkg);
  const vmlinuz = join(root, 'boot', `vmlinuz-${version}`);
  const indexed = join(root, 'lib', 'modules', version, 'modules.dep');
  if (existsSync(vmlinuz) && existsSync(indexed)) return { version, vmlinuz, root };

  // Unpack beside, then rename: an interrupted run leaves no half tree behind.
  const partial = `${root}.partial`;
  await rm(partial, { recursive: true, force: true });
  await mkdir(partial);
  await execa('dpkg-deb', ['-x', deb, partial]);
  await execa('depmod', ['-b', partial, version]);
  await rm(root, { recursive: true, force: true });
  await rename(partial, root);
  return { version, vmlinuz, root };
}

/** The versions of a package Debian's archive offers, as apt-cache madison lists them. */
export async function archiveVersions(pkg: string): Promise<string[]> {
  const r = await execa('apt-cache', ['madison', pkg]);
  return r.stdout.split('\n').map((l) => l.split('|')[1]?.trim() ?? '').filter(Boolean);
}

/**
 * The .deb files that installing PACKAGES (name=version) into ROOT takes,
 * dependencies included, as apt on this host resolves them against the
 * root's own dpkg status; each downloaded once into the cache.
 */
export async function debsToInstall(root: string, packages: readonly string[]): Promise<string[]> {
  const r = await execa('apt-get', [
    '-o', `Dir::State::status=${join(root, 'var/lib/dpkg/status')}`,
    'install', '--simulate', '--no-install-recommends', ...packages,
  ]);
  const wanted = [...r.stdout.matchAll(/^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) /gm)].map((m) => [m[1]!, m[2]!] as const);
  if (!wanted.length) throw new Error(`apt-get install --simulate ${packages.join(' ')} found nothing to install in ${root}`);
  const debs: string[] = [];
  for (const [name, version] of wanted) debs.push(await cachedDeb(name, version));
  return debs;
}
