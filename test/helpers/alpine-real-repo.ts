/**
 * A local repository for an alpine image made of Alpine's REAL packages
 * (../shared/alpine, see its README: Alpine 3.19's alpine-base, busybox,
 * openrc, musl, apk-tools, e2fsprogs, util-linux's mount, lsblk and sfdisk,
 * ..., each keeping Alpine's own signature) and STAND-INS for what is not
 * there, made here and signed with a test key:
 * - linux-virt and linux-firmware-intel: Debian's cloud kernel laid out as
 *   aports' linux-virt (test/helpers/alpine-repo.ts);
 * - nodejs, squashfs-tools (mksquashfs, unsquashfs), attr (setfattr,
 *   getfattr), kmod, mtools, and util-linux's losetup, setpriv, findmnt and
 *   blkid: the build machine's glibc programs at Alpine's paths, each
 *   depending on cairn-test-glibc, which carries their libraries and glibc's
 *   loader at the build machine's paths (/lib64/ld-linux-x86-64.so.2,
 *   /lib/x86_64-linux-gnu/...; Alpine's musl lives in /lib and never looks
 *   there), so they run as they are;
 * - busybox-static: the build machine's static busybox as /bin/busybox.static;
 * - util-linux: the meta package, empty, at Alpine 3.19's version, so the
 *   real subpackages that are install_if it (mount, lsblk, sfdisk, partx)
 *   come with it as they do on Alpine.
 * The index is cairn's (src/apk/repo.ts, as `apk index` writes it), signed
 * with the test key; the keys directory holds Alpine's five keys and the
 * test key. apk is Alpine's own: apk-tools 2.14.4 from the 3.20.3
 * minirootfs, run through its musl loader by a wrapper script.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { execa } from 'execa';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { packageIdentity, readApk } from '../../src/apk/read.js';
import { writeLocalRepo, type RepoPackage } from '../../src/apk/repo.js';
import { bootModulesTree, firmware, hostProgramPackages, kernel, pkg, REPO_KEY_NAME, type HostProgramPackage } from './alpine-repo.js';
import { dir, file } from './apk-harness.js';
import type { TestKernel } from './vm-kernel.js';

/** ../shared/alpine beside the repository: test data, never copied into it. */
export const SHARED_ALPINE = fileURLToPath(new URL('../../../shared/alpine', import.meta.url));
const MINIROOTFS = 'alpine-minirootfs-3.20.3-x86_64.tar.gz';
/** util-linux's version in Alpine 3.19 (the real subpackages here are 2.39.3-r0). */
const UTIL_LINUX = '2.39.3-r0';

export interface RealAlpineRepo {
  /** The repository: `<dir>/x86_64/APKINDEX.tar.gz` and the packages. */
  dir: string;
  /** The second repository: Alpine's packages left out of the first. */
  later: string;
  /** Alpine's keys and the test key. */
  keysDir: string;
  /** Alpine's apk (the minirootfs's), as a program cairn image build --apk takes. */
  apk: string;
  key: KeyObject;
  /** The names of Alpine's real packages in the repository. */
  real: string[];
  /** The names of the stand-ins made here. */
  standIns: string[];
}

/** Fails, saying where they belong, unless Alpine's packages, keys and minirootfs are there. */
export function requireSharedAlpine(): void {
  for (const p of ['packages', 'keys', MINIROOTFS]) {
    if (!existsSync(join(SHARED_ALPINE, p))) {
      throw new Error(`this test needs Alpine's real packages in ${SHARED_ALPINE} (../shared/alpine beside the repository, see its README); ${p} is missing`);
    }
  }
}

/** Alpine's real packages, each as its file is: bytes, .PKGINFO and identity for the index. */
function realPackages(): { name: string; pkg: RepoPackage }[] {
  const dirPath = join(SHARED_ALPINE, 'packages');
  return readdirSync(dirPath).filter((f) => f.endsWith('.apk')).sort().map((f) => {
    const bytes = readFileSync(join(dirPath, f));
    const apk = readApk(bytes, f);
    return { name: apk.pkginfo.pkgname, pkg: { bytes, pkginfo: apk.pkginfoText, identity: packageIdentity(apk.control.compressed) } };
  });
}

/** Writes a repository of PACKAGES at DIR, its index signed with KEY. */
async function writeRepo(dirPath: string, packages: RepoPackage[], key: KeyObject): Promise<void> {
  rmSync(dirPath, { recursive: true, force: true });
  await writeLocalRepo({ dir: dirPath, arch: 'x86_64', packages, signingKey: key, keyName: REPO_KEY_NAME, description: 'Alpine 3.19 packages and cairn test stand-ins' });
}

/** The build machine's glibc programs standing in for Alpine's packages, at Alpine's paths. */
function glibcStandIns(): Record<string, HostProgramPackage> {
  const kmodLinks = Object.fromEntries(['depmod', 'insmod', 'lsmod', 'modinfo', 'modprobe', 'rmmod'].map((c) => [`sbin/${c}`, '../bin/kmod']));
  const mtoolsLinks = Object.fromEntries(['mattrib', 'mcopy', 'mdel', 'mdir', 'mformat', 'minfo', 'mlabel', 'mmd', 'mrd', 'mren', 'mtype'].map((c) => [`usr/bin/${c}`, 'mtools']));
  return {
    nodejs: { version: `${process.versions.node}-r0`, files: { [realpathSync(process.execPath)]: 'usr/bin/node' } },
    'squashfs-tools': { version: '4.6.1-r1', files: { '/usr/bin/mksquashfs': 'usr/bin/mksquashfs', '/usr/bin/unsquashfs': 'usr/bin/unsquashfs' } },
    attr: { version: '2.5.2-r0', files: { '/usr/bin/setfattr': 'usr/bin/setfattr', '/usr/bin/getfattr': 'usr/bin/getfattr' } },
    kmod: { version: '31-r2', files: { '/usr/bin/kmod': 'bin/kmod' }, links: kmodLinks },
    mtools: { version: '4.0.43-r1', files: { '/usr/bin/mtools': 'usr/bin/mtools' }, links: mtoolsLinks },
    losetup: { version: UTIL_LINUX, files: { '/usr/sbin/losetup': 'sbin/losetup' } },
    setpriv: { version: UTIL_LINUX, files: { '/usr/bin/setpriv': 'usr/bin/setpriv' } },
    findmnt: { version: UTIL_LINUX, files: { '/usr/bin/findmnt': 'bin/findmnt' } },
    blkid: { version: UTIL_LINUX, files: { '/usr/sbin/blkid': 'sbin/blkid' } },
    'e2fsprogs-extra': { version: '1.47.0-r5', files: { '/usr/sbin/resize2fs': 'usr/sbin/resize2fs' } },
    coreutils: { version: '9.4-r2', files: { '/usr/bin/cksum': 'usr/bin/cksum' } },
  };
}

const STANDIN = 'stand-in';

/** mtools reads FAT names through iconv in code page 850: glibc's module for it. */
const GCONV = ['gconv-modules', 'gconv-modules.cache', 'gconv-modules.d/gconv-modules-extra.conf', 'IBM850.so'].map((f) => ({ path: `/usr/lib/x86_64-linux-gnu/gconv/${f}`, mode: 0o644 }));

function busyboxStatic(key: KeyObject): RepoPackage {
  return pkg(key, 'busybox-static', '1.36.1-r15', [dir('bin'), file('bin/busybox.static', readFileSync('/usr/bin/busybox'), 0o755)], [], STANDIN);
}

function utilLinuxMeta(key: KeyObject): RepoPackage {
  const doc = 'usr/share/doc/util-linux';
  return pkg(key, 'util-linux', UTIL_LINUX, [dir('usr'), dir('usr/share'), dir('usr/share/doc'), dir(doc), file(`${doc}/README`, 'stand-in for the util-linux meta package\n')], [], STANDIN);
}

/**
 * Alpine's apk from the minirootfs, unpacked once into CACHEDIR, and a
 * wrapper that runs it through the minirootfs's musl loader.
 */
export async function alpineApk(cacheDir: string): Promise<string> {
  const root = join(cacheDir, 'minirootfs');
  if (!existsSync(join(root, 'sbin/apk'))) {
    const partial = `${root}.partial`;
    rmSync(partial, { recursive: true, force: true });
    mkdirSync(partial, { recursive: true });
    await execa('tar', ['-xzf', join(SHARED_ALPINE, MINIROOTFS), '-C', partial]);
    rmSync(root, { recursive: true, force: true });
    renameSync(partial, root);
  }
  const wrapper = join(cacheDir, 'apk');
  writeFileSync(wrapper, `#!/bin/sh\nexec '${root}/lib/ld-musl-x86_64.so.1' --library-path '${root}/lib:${root}/usr/lib' '${root}/sbin/apk' "$@"\n`, { mode: 0o755 });
  return wrapper;
}

/**
 * Writes the repository under AT (`repo/`, `keys/`, the kernel's modules
 * tree) and finds Alpine's apk. Alpine's packages named in LATER are left
 * out of it and put in a second repository (`later/`), signed with the same
 * key: what a user adds from on the running stick.
 */
export async function writeRealAlpineRepo(at: string, k: TestKernel, later: readonly string[] = []): Promise<RealAlpineRepo> {
  requireSharedAlpine();
  const { privateKey: key, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keysDir = join(at, 'keys');
  rmSync(keysDir, { recursive: true, force: true });
  mkdirSync(keysDir, { recursive: true });
  for (const f of readdirSync(join(SHARED_ALPINE, 'keys'))) copyFileSync(join(SHARED_ALPINE, 'keys', f), join(keysDir, f));
  writeFileSync(join(keysDir, REPO_KEY_NAME), publicKey.export({ type: 'spki', format: 'pem' }) as string);

  const all = realPackages();
  for (const name of later) if (!all.some((r) => r.name === name)) throw new Error(`${name} is not among Alpine's packages in ${SHARED_ALPINE}`);
  const real = all.filter((r) => !later.includes(r.name));
  const standIns = [
    kernel(key, k, await bootModulesTree(k, join(at, 'kernel'))),
    firmware(key),
    ...(await hostProgramPackages(key, glibcStandIns(), { extra: GCONV, what: STANDIN })),
    busyboxStatic(key),
    utilLinuxMeta(key),
  ];
  const dirPath = join(at, 'repo');
  await writeRepo(dirPath, [...real.map((r) => r.pkg), ...standIns], key);
  const laterDir = join(at, 'later');
  await writeRepo(laterDir, all.filter((r) => later.includes(r.name)).map((r) => r.pkg), key);
  return {
    dir: dirPath,
    later: laterDir,
    keysDir,
    apk: await alpineApk(at),
    key,
    real: real.map((r) => r.name),
    standIns: standIns.map((p) => readApk(p.bytes).pkginfo.pkgname),
  };
}
