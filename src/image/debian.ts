import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UsageError } from '../lib/errors.js';
import { run } from '../lib/run.js';
import { inChroot, withChroot } from './chroot.js';
import { servedDigest } from './repoDigest.js';
import { cachedRoot, withCacheLock } from './rootCache.js';

export interface DebianRootOptions {
  suite: string;
  /** Debian archive to use; undefined takes the build machine's own apt source. */
  mirror?: string;
  /** The kernel package, e.g. linux-image-amd64 or linux-image-cloud-amd64. */
  kernelPackage: string;
  luks: boolean;
  cacheDir: string;
}

/** What every debian-based cairn carries besides the minimal base. */
export function debianPackages(o: Pick<DebianRootOptions, 'kernelPackage' | 'luks'>): string[] {
  // fdisk's sfdisk finds the BIOS boot partition when a GRUB update rewrites the BIOS core.
  const base = [
    'openrc', 'sysvinit-core', 'nodejs', 'squashfs-tools', 'busybox-static', 'kmod', 'e2fsprogs', 'attr',
    'util-linux', 'procps', 'iproute2', 'ifupdown', 'isc-dhcp-client', 'dosfstools', 'mtools', 'fdisk', o.kernelPackage,
  ];
  return o.luks ? [...base, 'cryptsetup-bin'] : base;
}

/**
 * A Debian root with cairn's packages, made once per package set and kept in
 * the cache (rootCache.ts). The minimal base debootstrap makes is cached on
 * its own, per release and mirror, so another package set (another kernel,
 * cryptsetup for an encrypted stick) only installs its packages onto a copy
 * of it; the downloaded .deb files are kept too, so even a new package set
 * fetches only what it lacks. Both are kept under the suite's Release file
 * as the mirror serves it now (debootstrap reads it first, and apt in the
 * chroot installs from the lists debootstrap left): a mirror that changed
 * gets new roots.
 */
export async function debianRoot(o: DebianRootOptions, target: string): Promise<void> {
  const packages = debianPackages(o);
  const mirror = o.mirror ?? (await hostDebianMirror());
  const debs = join(o.cacheDir, 'debs');
  const served = [await servedDigest(releaseFiles(mirror, o.suite))];
  await cachedRoot(
    {
      cacheDir: o.cacheDir,
      name: `debian-${o.suite}`,
      key: [o.suite, mirror, packages],
      served,
      bootstrap: async (partial) => {
        await cachedRoot(
          {
            cacheDir: o.cacheDir,
            name: `debian-${o.suite}-minbase`,
            key: [o.suite, mirror],
            served,
            bootstrap: async (base) => {
              await mkdir(debs, { recursive: true });
              await run('debootstrap', ['--variant=minbase', `--cache-dir=${debs}`, o.suite, base, mirror], {
                timeoutMs: 3600_000,
                hint: `check that ${mirror} is reachable, or pass --mirror`,
              });
            },
          },
          partial,
        );
        // Two package sets bootstrapped at once (two builds sharing a cache) take turns on the shared archive.
        await withCacheLock(debs, () =>
          withChroot(partial, [{ from: debs, to: 'var/cache/apt/archives' }], () =>
            inChroot(partial, ['apt-get', 'install', '-y', '-q', '--no-install-recommends', ...packages], {
              hint: `installing ${packages.join(' ')} failed`,
              // No initramfs-tools image of the kernel: cairn builds its own
              // initramfs, and Debian's would cost a minute of every new root.
              env: { INITRD: 'No' },
            }),
          ),
        );
      },
    },
    target,
  );
}

/** The suite's Release file on a mirror (URL or file: URL), in debootstrap's order: signed inline, then plain. */
function releaseFiles(mirror: string, suite: string): string[] {
  const dists = `${mirror.replace(/\/+$/, '')}/dists/${suite}`;
  return [`${dists}/InRelease`, `${dists}/Release`];
}

/** The first Debian archive the build machine's apt uses (deb822 or one-line sources). */
export async function hostDebianMirror(): Promise<string> {
  const files = ['/etc/apt/sources.list'];
  const dir = '/etc/apt/sources.list.d';
  if (existsSync(dir)) files.push(...(await readdir(dir)).filter((f) => /\.(list|sources)$/.test(f)).map((f) => join(dir, f)));
  for (const f of files) {
    const text = await readFile(f, 'utf8').catch(() => '');
    for (const m of text.matchAll(/^\s*(?:deb\s+(?:\[[^\]]*\]\s+)?|URIs:\s*)(\S+)/gm)) {
      const uri = m[1]!;
      if (/debian\/?$/.test(uri) && !/security/.test(uri)) return uri;
    }
  }
  throw new UsageError('no Debian archive found in this machine\'s apt sources', { hint: 'pass --mirror URL' });
}
