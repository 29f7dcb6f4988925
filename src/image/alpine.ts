import { createHash } from 'node:crypto';
import { constants, existsSync } from 'node:fs';
import { access, copyFile, mkdir, readdir, readFile } from 'node:fs/promises';
import { delimiter, join, resolve } from 'node:path';
import { LOCAL_KEY } from '../apk/localKey.js';
import { SHIM_MARKER } from '../apk/shim.js';
import { trustedIndexKey } from '../apk/repo.js';
import { ToolMissingError, UsageError } from '../lib/errors.js';
import { run } from '../lib/run.js';
import { servedDigest } from './repoDigest.js';
import { cachedRoot } from './rootCache.js';

/** The architecture cairn's images are built for (GRUB's x86_64-efi and i386-pc). */
export const ALPINE_ARCH = 'x86_64';
export const ALPINE_KERNELS = ['linux-lts', 'linux-virt'] as const;
export const DEFAULT_ALPINE_RELEASE = 'v3.20';
const CDN = 'https://dl-cdn.alpinelinux.org/alpine';

export interface AlpineRootOptions {
  /** Repository URLs or local directories, in apk's order. */
  repositories: string[];
  /** The apk program to bootstrap with. */
  apk: string;
  /** The trusted keys: copied into the root's /etc/apk/keys. */
  keysDir: string;
  kernelPackage: string;
  luks: boolean;
  cacheDir: string;
}

/** main and community of a release on Alpine's CDN. */
export function defaultAlpineRepositories(release: string): string[] {
  return [`${CDN}/${release}/main`, `${CDN}/${release}/community`];
}

/** The repositories to bootstrap from: those given (local ones made absolute), else the release's on the CDN. */
export function bootstrapRepositories(given: readonly string[] | undefined, release: string): string[] {
  return given?.length ? given.map((r) => (isUrl(r) ? r : resolve(r))) : defaultAlpineRepositories(release);
}

/**
 * The repositories the image's apk uses: the network ones the image was
 * built from; a build from local directories only (which the stick does not
 * carry) gets the release's repositories on Alpine's CDN.
 */
export function imageRepositories(repositories: readonly string[], release: string): string[] {
  const remote = repositories.filter(isUrl);
  return remote.length ? remote : defaultAlpineRepositories(release);
}

/** What every alpine-based cairn carries besides Alpine's base. */
export function alpinePackages(o: Pick<AlpineRootOptions, 'kernelPackage' | 'luks'>): string[] {
  const base = [
    'alpine-base', 'openrc', 'busybox-mdev-openrc', 'nodejs', 'squashfs-tools', 'busybox-static', 'kmod', 'e2fsprogs', 'attr',
    // sfdisk finds the BIOS boot partition when a GRUB update rewrites the BIOS core.
    'util-linux', 'sfdisk', 'dosfstools', 'mtools', o.kernelPackage,
    // The initramfs grows the data partition with resize2fs (initramfs/lib/grow.sh),
    // and checks each state with coreutils' cksum, about ten times busybox's speed.
    'e2fsprogs-extra', 'coreutils',
    // Alpine splits util-linux: the programs cairn runs whose busybox applets
    // lack the options it uses (src/lib/toolPackages.ts), by name.
    'losetup', 'setpriv', 'blkid', 'lsblk', 'findmnt',
  ];
  return o.luks ? [...base, 'cryptsetup'] : base;
}

/**
 * An Alpine root made by apk itself, as Alpine's alpine-make-rootfs does: a
 * new database in an empty root (`--initdb`), only the given repositories,
 * the trusted keys copied into the root first so every package and index is
 * checked against them. Kept in the cache (rootCache.ts) under what it is
 * made from: the repositories' indexes and the keys' contents, so a
 * repository whose packages changed (or a key replaced) gets a new root;
 * packages apk downloads stay in `<cache>/apk` for the next bootstrap.
 */
export async function alpineRoot(o: AlpineRootOptions, target: string): Promise<void> {
  const packages = alpinePackages(o);
  const apkCache = join(o.cacheDir, 'apk');
  await cachedRoot(
    {
      cacheDir: o.cacheDir,
      name: `alpine-${ALPINE_ARCH}`,
      key: [o.repositories, packages, await keyDigests(o.keysDir)],
      served: await Promise.all(o.repositories.map((r) => servedDigest([repositoryIndex(r)]))),
      bootstrap: async (partial) => {
        const keys = join(partial, 'etc/apk/keys');
        await mkdir(keys, { recursive: true });
        // A build machine that is itself a cairn stick trusts its own local
        // key; the new stick gets a key of its own (alpinePackaging.ts).
        for (const k of await keyNames(o.keysDir)) if (k !== LOCAL_KEY.publicName) await copyFile(join(o.keysDir, k), join(keys, k));
        await mkdir(apkCache, { recursive: true });
        await run(o.apk, bootstrapArgs({ root: partial, keysDir: keys, cacheDir: apkCache, repositories: o.repositories, packages }), {
          timeoutMs: 3600_000,
          hint: `apk could not install ${packages.join(' ')} from ${o.repositories.join(', ')}`,
        });
      },
    },
    target,
  );
}

/** apk's command line for a new root (apk-tools 2.14). */
export function bootstrapArgs(o: { root: string; keysDir: string; cacheDir: string; repositories: readonly string[]; packages: readonly string[] }): string[] {
  return [
    'add',
    '--root', o.root,
    '--initdb',
    '--arch', ALPINE_ARCH,
    '--keys-dir', o.keysDir,
    // Only the repositories given: never the build machine's own.
    '--repositories-file', '/dev/null',
    ...o.repositories.flatMap((r) => ['--repository', r]),
    '--cache-dir', o.cacheDir,
    // The indexes as they are now, which the root's key was made from, not
    // apk's cached copy of a remote one (apk 2.14.4: --update-cache still
    // takes a copy under a minute old; packages still come from the cache).
    '--force-refresh',
    '--no-interactive',
    '--no-progress',
    '--',
    ...o.packages,
  ];
}

/**
 * The apk to bootstrap with: the one given, else apk or apk.static on PATH
 * (never cairn's own shim, on a build machine that is itself a cairn stick).
 */
export async function findApk(given?: string): Promise<string> {
  if (given) {
    const path = resolve(given);
    if (!(await executable(path))) throw new UsageError(`--apk ${given} is not an executable file`);
    return path;
  }
  for (const name of ['apk', 'apk.static']) {
    for (const dir of (process.env.PATH ?? '').split(delimiter).filter(Boolean)) {
      const path = join(dir, name);
      if ((await executable(path)) && !(await isShim(path))) return path;
    }
  }
  throw new ToolMissingError(
    'apk',
    'the alpine base is bootstrapped with apk-tools, which Debian does not package: take apk.static from Alpine\'s apk-tools-static package (or an Alpine machine) and pass --apk PATH',
  );
}

/**
 * Checks, before anything is written, what the bootstrap needs from outside:
 * trusted keys, and each repository's index for this architecture, reachable
 * (a local directory's index also signed by one of the keys).
 */
export async function checkAlpineSources(o: { repositories: readonly string[]; keysDir: string }): Promise<void> {
  if (!existsSync(o.keysDir) || !(await keyNames(o.keysDir)).length) {
    throw new UsageError(`no trusted Alpine keys (*.rsa.pub) in ${o.keysDir}`, {
      hint: 'pass --apk-keys DIR: Alpine\'s keys are in /etc/apk/keys on an Alpine machine and in the alpine-keys package',
    });
  }
  if (!o.repositories.length) throw new UsageError('no Alpine repository given', { hint: 'pass --repository URL|DIR' });
  for (const r of o.repositories) {
    const index = repositoryIndex(r);
    if (isUrl(r)) {
      const problem = await fetch(index, { method: 'HEAD', signal: AbortSignal.timeout(20_000) }).then(
        (res) => (res.ok ? undefined : `HTTP ${res.status}`),
        (e: Error) => (e.cause as Error | undefined)?.message ?? e.message,
      );
      if (problem) {
        throw new UsageError(`the Alpine repository ${r} is not reachable (${index}: ${problem})`, {
          hint: 'check the network or the URL, or pass --repository DIR with a local repository',
        });
      }
    } else {
      if (!existsSync(index)) {
        throw new UsageError(`${r} is not an Alpine repository: ${index} is missing`, { hint: 'pass a directory made by apk index (or a mirror\'s copy)' });
      }
      if (!(await trustedIndexKey(await readFile(index), o.keysDir))) {
        throw new UsageError(`the index of ${r} is not signed by a key in ${o.keysDir}: apk would refuse it`, {
          hint: 'pass --apk-keys DIR with the key that signed the repository',
        });
      }
    }
  }
}

/** The index apk reads first from a repository (a URL or a local directory). */
function repositoryIndex(r: string): string {
  return `${r.replace(/\/+$/, '')}/${ALPINE_ARCH}/APKINDEX.tar.gz`;
}

function isUrl(r: string): boolean {
  return /^[a-z]+:\/\//.test(r);
}

async function keyNames(dir: string): Promise<string[]> {
  return existsSync(dir) ? (await readdir(dir)).filter((f) => f.endsWith('.pub')).sort() : [];
}

/** Each trusted key's name (apk finds a key by the name a signature gives) and a digest of its content. */
async function keyDigests(dir: string): Promise<[string, string][]> {
  const digest = async (k: string): Promise<[string, string]> => [k, createHash('sha256').update(await readFile(join(dir, k))).digest('hex')];
  return Promise.all((await keyNames(dir)).map(digest));
}

async function executable(path: string): Promise<boolean> {
  return access(path, constants.X_OK).then(
    () => true,
    () => false,
  );
}

async function isShim(path: string): Promise<boolean> {
  const head = await readFile(path).then((b) => b.subarray(0, 200).toString('latin1'), () => '');
  return head.includes(SHIM_MARKER);
}
