/**
 * A small signed local repository of Alpine-format packages for building
 * an alpine-based image where Alpine's mirrors cannot be reached. The
 * packages are PLACEHOLDERS shaped like Alpine's, not Alpine's:
 * - alpine-base: the files of alpine-baselayout, openrc and busybox a cairn
 *   image touches (inittab, passwd, group, shadow, profile, the init.d
 *   scripts Alpine enables, as stubs) and the build machine's static
 *   busybox as /bin/busybox and /bin/sh;
 * - linux-virt: Debian's cloud kernel laid out as aports' linux-virt
 *   (boot/vmlinuz-virt, lib/modules/<release>/, usr/share/kernel/virt/
 *   kernel.release), depending on the firmware package; of its modules only
 *   those cairn's initramfs carries, indexed again with depmod, so the
 *   package is a few MiB instead of 90;
 * - linux-firmware-intel: a small firmware file under lib/firmware;
 * - squashfs-tools, attr and e2fsprogs: the build machine's unsquashfs,
 *   setfattr, mke2fs (and mkfs.ext4) and e2fsck, which the image's initramfs
 *   carries from the image root, with cairn-test-glibc holding their glibc
 *   libraries and loader at their paths there (Alpine's would be musl's);
 * - one placeholder for every other package cairn installs (nodejs,
 *   kmod...), holding a README.
 * Everything is signed with a test key whose public half is in `keysDir`.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { execa } from 'execa';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { readApk, packageIdentity } from '../../src/apk/read.js';
import { writeLocalRepo, type RepoPackage } from '../../src/apk/repo.js';
import type { TarEntry } from '../../src/apk/tar.js';
import { writeApk } from '../../src/apk/write.js';
import { alpinePackages } from '../../src/image/alpine.js';
import { bootModules } from '../../src/initramfs/bootModules.js';
import { readModuleIndex, selectModules } from '../../src/initramfs/modules.js';
import { dir, file, symlink, treeEntries } from './apk-harness.js';
import type { TestKernel } from './vm-kernel.js';

export const REPO_KEY_NAME = 'cairn-test-repo.rsa.pub';
export const FIRMWARE_FILE = 'intel/ibt-20-1-3.sfi';

export interface TestRepo {
  dir: string;
  keysDir: string;
  key: KeyObject;
}

const ALPINE_INITTAB = `# /etc/inittab

::sysinit:/sbin/openrc sysinit
::sysinit:/sbin/openrc boot
::wait:/sbin/openrc default

tty1::respawn:/sbin/getty 38400 tty1

# Put a getty on the serial port
#ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100

::ctrlaltdel:/sbin/reboot
::shutdown:/sbin/openrc shutdown
`;

const ALPINE_SERVICES = ['devfs', 'dmesg', 'mdev', 'hwdrivers', 'modules', 'sysctl', 'hostname', 'bootmisc', 'syslog', 'hwclock', 'killprocs', 'mount-ro', 'localmount'];

function pkginfo(name: string, version: string, size: number, extra: string[] = [], what = 'placeholder'): string {
  return [`pkgname = ${name}`, `pkgver = ${version}`, `pkgdesc = ${name} (cairn test ${what})`, 'url = https://example.org/', 'builddate = 1700000000',
    `size = ${size}`, 'arch = x86_64', `origin = ${name}`, 'license = GPL-2.0-only', ...extra, ''].join('\n');
}

/** A package signed with the test key; its description calls it a test WHAT. */
export function pkg(key: KeyObject, name: string, version: string, data: TarEntry[], extra: string[] = [], what = 'placeholder'): RepoPackage {
  const size = data.reduce((n, e) => n + (e.content?.length ?? 0), 0);
  const written = writeApk({ pkginfo: pkginfo(name, version, size, extra, what), data, signingKey: key, keyName: REPO_KEY_NAME });
  return { bytes: written.bytes, pkginfo: written.pkginfo, identity: packageIdentity(readApk(written.bytes).control.compressed) };
}

function alpineBase(key: KeyObject, busybox: string): RepoPackage {
  const stub = (s: string) => `#!/sbin/openrc-run\n# placeholder for Alpine's ${s}\ndescription="${s}"\n`;
  return pkg(key, 'alpine-base', '3.20.3-r0', [
    dir('bin'), file('bin/busybox', readFileSync(busybox), 0o755), symlink('bin/sh', 'busybox'),
    dir('etc'), file('etc/inittab', ALPINE_INITTAB),
    file('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\nbin:x:1:1:bin:/bin:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n'),
    file('etc/group', 'root:x:0:root\nbin:x:1:root,bin,daemon\nshadow:x:42:\nwheel:x:10:root\nnogroup:x:65533:\nnobody:x:65534:\n'),
    file('etc/shadow', 'root:*::0:::::\nbin:!::0:::::\nnobody:!::0:::::\n', 0o640),
    file('etc/profile', 'export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"\nfor script in /etc/profile.d/*.sh ; do\n\tif [ -r "$script" ] ; then\n\t\t. "$script"\n\tfi\ndone\n'),
    dir('etc/init.d'), ...ALPINE_SERVICES.map((s) => file(`etc/init.d/${s}`, stub(s), 0o755)),
    dir('etc/conf.d'), file('etc/conf.d/localmount', '#no_umounts="/dev/shm:/var/lib/foo"\n'),
    dir('etc/runlevels'), dir('etc/runlevels/sysinit'), dir('etc/runlevels/boot'), dir('etc/runlevels/default'), dir('etc/runlevels/shutdown'),
    dir('etc/skel'), dir('home'), dir('sbin'), file('sbin/apk', '#!/bin/sh\necho "placeholder for apk-tools" >&2\nexit 1\n', 0o755),
    dir('usr'), dir('usr/bin'), dir('usr/sbin'), dir('usr/local'), dir('usr/local/sbin'),
  ]);
}

/** A modules tree holding only the modules cairn's initramfs carries, indexed with depmod. */
export async function bootModulesTree(k: TestKernel, at: string): Promise<string> {
  const from = join(k.root, 'lib/modules', k.version);
  const to = join(at, 'lib/modules', k.version);
  const selection = selectModules(await readModuleIndex(k.root, k.version), bootModules({ luks: true }));
  for (const path of selection.paths) {
    mkdirSync(dirname(join(to, path)), { recursive: true });
    copyFileSync(join(from, path), join(to, path));
  }
  for (const f of ['modules.builtin', 'modules.builtin.modinfo', 'modules.order']) if (existsSync(join(from, f))) copyFileSync(join(from, f), join(to, f));
  await execa('depmod', ['-b', at, k.version]);
  return join(at, 'lib/modules');
}

export function kernel(key: KeyObject, k: TestKernel, modules: string): RepoPackage {
  const boot = join(k.root, 'boot');
  return pkg(key, 'linux-virt', '6.1.192-r0', [
    dir('boot'),
    file('boot/vmlinuz-virt', readFileSync(k.vmlinuz)),
    file('boot/config-virt', readFileSync(join(boot, `config-${k.version}`))),
    dir('lib'),
    ...treeEntries(modules, 'lib/modules'),
    dir('usr'), dir('usr/share'), dir('usr/share/kernel'), dir('usr/share/kernel/virt'),
    file('usr/share/kernel/virt/kernel.release', `${k.version}\n`),
  ], ['depend = linux-firmware-intel']);
}

export function firmware(key: KeyObject): RepoPackage {
  return pkg(key, 'linux-firmware-intel', '20240811-r0', [
    dir('lib'), dir('lib/firmware'), dir('lib/firmware/intel'), file(`lib/firmware/${FIRMWARE_FILE}`, Buffer.alloc(3000, 0x22)),
  ]);
}

/** The libraries and the loader the build machine's loader lists for PROGRAM, as absolute paths there. */
async function hostLibraries(program: string): Promise<string[]> {
  const list = (await execa('ldd', [program])).stdout;
  return [...list.matchAll(/(\/\S+) \(0x/g)].map((m) => m[1]!);
}

/**
 * Package entries for files of the build machine, each at PATH's place
 * (or AT's, when given) with the directories above it.
 */
function hostFileEntries(files: readonly { path: string; at?: string; mode?: number }[]): TarEntry[] {
  const entries = new Map<string, TarEntry>();
  for (const f of files) {
    const name = (f.at ?? f.path).replace(/^\//, '');
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!entries.has(d)) entries.set(d, dir(d));
    }
    entries.set(name, file(name, readFileSync(f.path), f.mode ?? 0o755));
  }
  return [...entries.values()];
}

/** A package of the build machine's programs: FILES (path there -> path in the package), LINKS (path -> target). */
export interface HostProgramPackage {
  version: string;
  files: Record<string, string>;
  links?: Record<string, string>;
}

export const GLIBC_PACKAGE = 'cairn-test-glibc';

/**
 * PACKAGES, each depending on cairn-test-glibc, which holds the libraries
 * and the loader they all need at their paths on the build machine (two
 * packages may not own one file), and EXTRA files of it; WHAT names them
 * in their descriptions.
 */
export async function hostProgramPackages(
  key: KeyObject,
  packages: Record<string, HostProgramPackage>,
  o: { extra?: { path: string; mode: number }[]; what?: string } = {},
): Promise<RepoPackage[]> {
  const libraries = new Set<string>();
  for (const p of Object.values(packages)) for (const program of Object.keys(p.files)) for (const lib of await hostLibraries(program)) libraries.add(lib);
  const glibc = hostFileEntries([...[...libraries].sort().map((path) => ({ path })), ...(o.extra ?? [])]);
  const out = [pkg(key, GLIBC_PACKAGE, '2.36-r0', glibc, [], o.what)];
  for (const [name, p] of Object.entries(packages)) {
    const entries = hostFileEntries(Object.entries(p.files).map(([path, at]) => ({ path, at })));
    for (const [at, target] of Object.entries(p.links ?? {})) {
      const parent = at.split('/').slice(0, -1).join('/');
      if (!entries.some((e) => e.name === parent)) entries.push(dir(parent));
      entries.push(symlink(at, target));
    }
    out.push(pkg(key, name, p.version, entries, [`depend = ${GLIBC_PACKAGE}`], o.what));
  }
  return out;
}

/**
 * The build machine's programs the image's initramfs carries from the image
 * root (Alpine's would be musl's), by the package that brings each on
 * Alpine, at their paths on the build machine.
 */
const INITRAMFS_PROGRAMS: Record<string, HostProgramPackage> = {
  'squashfs-tools': { version: '4.6.1-r1', files: { '/usr/bin/unsquashfs': 'usr/bin/unsquashfs' } },
  attr: { version: '2.5.2-r0', files: { '/usr/bin/setfattr': 'usr/bin/setfattr' } },
  e2fsprogs: { version: '1.47.0-r5', files: { '/usr/sbin/mke2fs': 'usr/sbin/mke2fs', '/usr/sbin/e2fsck': 'usr/sbin/e2fsck' }, links: { 'usr/sbin/mkfs.ext4': 'mke2fs' } },
  'e2fsprogs-extra': { version: '1.47.0-r5', files: { '/usr/sbin/resize2fs': 'usr/sbin/resize2fs' } },
  sfdisk: { version: '2.39.3-r0', files: { '/usr/sbin/sfdisk': 'sbin/sfdisk' } },
  coreutils: { version: '9.4-r2', files: { '/usr/bin/cksum': 'usr/bin/cksum' } },
};

function placeholder(key: KeyObject, name: string): RepoPackage {
  return pkg(key, name, '1.0-r0', [dir('usr'), dir('usr/share'), dir('usr/share/doc'), dir(`usr/share/doc/${name}`), file(`usr/share/doc/${name}/README`, `placeholder for ${name}\n`)]);
}

/** Writes the repository (`<dir>/x86_64/APKINDEX.tar.gz` and the packages) and a keys directory trusting it. */
export async function writeTestRepo(at: string, k: TestKernel, busybox: string, luks = false): Promise<TestRepo> {
  const { privateKey: key, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keysDir = join(at, 'keys');
  mkdirSync(keysDir, { recursive: true });
  writeFileSync(join(keysDir, REPO_KEY_NAME), publicKey.export({ type: 'spki', format: 'pem' }) as string);
  const special = new Set(['alpine-base', 'linux-virt', ...Object.keys(INITRAMFS_PROGRAMS)]);
  const packages = [
    alpineBase(key, busybox),
    kernel(key, k, await bootModulesTree(k, join(at, 'kernel'))),
    firmware(key),
    ...(await hostProgramPackages(key, INITRAMFS_PROGRAMS)),
    ...alpinePackages({ kernelPackage: 'linux-virt', luks }).filter((n) => !special.has(n)).map((n) => placeholder(key, n)),
  ];
  const dirPath = join(at, 'repo');
  await writeLocalRepo({ dir: dirPath, arch: 'x86_64', packages, signingKey: key, keyName: REPO_KEY_NAME, description: 'cairn test repository' });
  return { dir: dirPath, keysDir, key };
}
