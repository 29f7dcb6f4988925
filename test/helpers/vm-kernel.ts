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
  const version = pkg.replace(/^linux-image-/, '');
  await mkdir(CACHE, { recursive: true });
  const find = () => readdirSync(CACHE).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
  let deb = find();
  if (!deb) {
    await execa('apt-get', ['download', pkg], { cwd: CACHE });
    deb = find();
    if (!deb) throw new Error(`apt-get download ${pkg} left no .deb in ${CACHE}`);
  }
  return { pkg, version, deb: join(CACHE, deb) };
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
