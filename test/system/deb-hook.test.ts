/**
 * Kernels and firmware through apt on the debian base, with real apt and
 * dpkg in a chroot of the image's own root (built by the image builder's
 * code, cached under the test cache), cairn's real hook configuration, a
 * real kernel package and a real firmware package from Debian's archive,
 * served from a local signed repository; then GRUB's packages, whose boot
 * files cairn puts on the ESP itself.
 *
 * The chroot stands in for the running system's merged root (the RAM upper
 * layer over the base image): whatever dpkg writes lands there, so "nothing
 * in the root" is "nothing in the upper layer". The ESP is a FAT image file
 * written with mtools, as on a stick; the data partition is a directory.
 */
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BOOT_STATE_FORMAT, formatBootState, kernelFiles, readBootState, type BootState } from '../../src/esp/bootState.js';
import { EFI_CORE_PATH, makeGrubCore } from '../../src/grub/core.js';
import { Esp } from '../../src/esp/esp.js';
import { BASES, kernelVersions } from '../../src/image/base.js';
import { configureRoot } from '../../src/image/configure.js';
import { debianRoot } from '../../src/image/debian.js';
import { withChroot, inChroot } from '../../src/image/chroot.js';
import { kernelPackageInstalled } from '../../src/packages/debian/hook.js';
import { makeAptRepo, sourcesLine } from '../helpers/apt-repo.js';
import { Scratch } from '../helpers/system.js';
import { requireHostTools } from '../helpers/vm-fixtures.js';
import { archiveVersions, CACHE, cloudKernelDeb, debsToInstall } from '../helpers/vm-kernel.js';

const FIRMWARE_PACKAGE = 'firmware-linux-free';

let scratch: Scratch;
let root: string;
let esp: Esp;
let baseKernel: string;
let update: { pkg: string; version: string; deb: string };
let firmwareDeb: string;
let grubVersion: string;
let grubPackages: string[];

const data = () => join(root, 'persist');

async function apt(args: string[]) {
  return withChroot(root, [], () =>
    inChroot(root, ['apt-get', ...args], {
      okExitCodes: [100],
      timeoutMs: 900_000,
    }),
  );
}

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('these tests need root (debootstrap, chroot, mounts): run them as root');
  requireHostTools('these tests', ['debootstrap', 'chroot', 'apt-get', 'apt-ftparchive', 'gpg', 'dpkg-deb', 'mksquashfs', 'unsquashfs', 'mcopy', 'mkfs.vfat']);
  scratch = new Scratch();
  root = scratch.path('root');
  await debianRoot({ suite: 'bookworm', kernelPackage: 'linux-image-cloud-amd64', luks: false, cacheDir: join(CACHE, 'build') }, root);
  await configureRoot(root, BASES.debian, {
    hostname: 'cairn',
    user: 'cairn',
    initDir: join(process.cwd(), 'initramfs'),
    swapMiB: 0,
    dataDir: join(root, '..', 'data-stage'),
    repositories: [],
  });
  baseKernel = (await kernelVersions(root, BASES.debian))[0]!;

  update = await cloudKernelDeb();
  if (update.version === baseKernel) throw new Error(`the archive's newest cloud kernel ${update.version} is the image's own: no update to test`);
  await execa('apt-get', ['download', FIRMWARE_PACKAGE], { cwd: scratch.path('.') });
  firmwareDeb = (await execa('sh', ['-c', `ls ${scratch.path('.')}/${FIRMWARE_PACKAGE}_*.deb`])).stdout.trim();

  // A kernel package changed after signing: same name and version, other bytes.
  const tampered = scratch.path('tampered');
  await execa('dpkg-deb', ['-R', update.deb, tampered]);
  await writeFile(join(tampered, 'boot', `config-${update.version}`), 'CONFIG_TAMPERED=y\n', { flag: 'a' });
  await execa('dpkg-deb', ['-Zxz', '-b', tampered, join(root, 'tampered.deb')]);

  grubVersion = (await archiveVersions('grub-efi-amd64-bin'))[0]!;
  grubPackages = ['grub-common', 'grub-efi-amd64-bin', 'grub-pc-bin'].map((p) => `${p}=${grubVersion}`);
  const grubDebs = await debsToInstall(root, grubPackages);

  await makeAptRepo(join(root, 'repo'), [update.deb, firmwareDeb, ...grubDebs]);
  // The only source, so apt, and the hook's apt-cache, know the packages from it alone.
  await writeFile(join(root, 'etc/apt/sources.list'), `${sourcesLine('/repo')}\n`);
  await rm(join(root, 'etc/apt/sources.list.d'), { recursive: true, force: true });

  // The hook as the image installs it, pointed at this test's ESP and data partition.
  const conf = join(root, 'etc/apt/apt.conf.d/50cairn');
  const flags = `--data /persist --esp /esp.img --running-kernel ${baseKernel}`;
  await writeFile(conf, (await readFile(conf, 'utf8')).replace(/deb-hook (pre-install|post-invoke)/g, `deb-hook $1 ${flags}`));
  await mkdir(data());
  await execa('truncate', ['-s', '96M', join(root, 'esp.img')]);
  await execa('mkfs.vfat', ['-F', '32', '-n', 'CAIRN-ESP', join(root, 'esp.img')]);
  esp = new Esp(join(root, 'esp.img'));
  const state: BootState = {
    format: BOOT_STATE_FORMAT,
    settings: { esp: { by: 'label', value: 'CAIRN-ESP' }, dataSpec: 'LABEL=cairn-data', upper: 'zram', serialSpeed: 115200, primaryConsole: 'serial' },
    timeoutSeconds: 3,
    luks: false,
    kernel: kernelFiles(baseKernel!),
  };
  await esp.install('grub/cairn-boot.json', { data: formatBootState(state) });
  await esp.install(`vmlinuz-${baseKernel}`, { file: join(root, 'boot', `vmlinuz-${baseKernel}`) });

  const updated = await apt(['update']);
  expect(updated.exitCode, updated.stderr).toBe(0);
}, 1_500_000);

afterAll(async () => {
  await scratch?.cleanup();
});

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const installed = async (pkg: string) =>
  (await withChroot(root, [], () => inChroot(root, ['dpkg-query', '-W', '-f', '${Status}', pkg], { okExitCodes: [1] }))).stdout;

describe('apt install of a kernel and firmware on the debian base (real apt, dpkg and Debian packages; a chroot stands in for the running root)', () => {
  it('the root carries cairn with a code cache its own Node.js made and uses (src/entry.mjs)', async () => {
    const r = await withChroot(root, [], () => inChroot(root, ['node', '/usr/lib/cairn/cairn.mjs', '--version'], { timeoutMs: 60_000, env: { CAIRN_CODE_CACHE: 'check' } }));
    expect(r.stdout).toMatch(/^\d+\.\d+\.\d+$/);
    // (The host's NODE_EXTRA_CA_CERTS, if set, makes Node.js warn in the chroot.)
    expect(r.stderr.split('\n')).toContain('cairn: code cache used');
    expect((await execa('chroot', [root, '/usr/bin/cairn', '--version'])).stdout).toBe(r.stdout);
  });

  it('refuses a kernel package whose bytes differ from the signed index, before dpkg runs', async () => {
    const r = await apt(['install', '-y', '--no-install-recommends', '/tampered.deb']);
    expect(r.exitCode).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/not a package apt knows from a signed repository/);
    expect(await installed(update.pkg)).not.toMatch(/install ok installed/);
    expect(existsSync(join(data(), `modules-${update.version}.squashfs`))).toBe(false);
    expect(await esp.exists(`vmlinuz-${update.version}`)).toBe(false);
  }, 600_000);

  it('installs the kernel: dpkg records it, its modules are an image on the data partition and nowhere in the root', async () => {
    const r = await apt(['install', '-y', '--no-install-recommends', update.pkg, FIRMWARE_PACKAGE]);
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    expect(r.stdout + r.stderr).toContain(`cairn: ${update.pkg}: ${update.version} boots by default; ${baseKernel} stays in the menu`);
    expect(await installed(update.pkg)).toBe('install ok installed');

    expect(existsSync(join(root, 'lib/modules', update.version))).toBe(false);
    expect(existsSync(join(root, 'boot', `vmlinuz-${update.version}`))).toBe(false);
    const listing = (await execa('unsquashfs', ['-l', join(data(), `modules-${update.version}.squashfs`)])).stdout;
    expect(listing).toMatch(/squashfs-root\/kernel\/drivers\/block\/virtio_blk\.ko/);
    expect(listing).toMatch(/squashfs-root\/modules\.dep$/m);
  }, 900_000);

  it('puts the package\'s own kernel and a fresh initramfs on the ESP, and the menu boots them with the old kernel kept', async () => {
    const shipped = (await execa('sh', ['-c', `dpkg-deb --fsys-tarfile '${update.deb}' | tar -xO ./boot/vmlinuz-${update.version} | sha256sum`])).stdout.split(' ')[0];
    expect(sha256((await esp.read(`vmlinuz-${update.version}`))!)).toBe(shipped);
    const initrd = (await esp.read(`initramfs-${update.version}`))!;
    expect(initrd.subarray(0, 2).toString('hex')).toBe('1f8b');
    const menu = (await esp.read('grub/grub.cfg'))!.toString();
    expect(menu).toMatch(new RegExp(`menuentry 'cairn \\(newest state\\)[^{]*\\{(?:[^}]|\\$\\{[a-z_]+\\})*linux /vmlinuz-${update.version} cairn\\.boot=default`));
    expect(menu).toMatch(new RegExp(`menuentry 'cairn \\(newest state, previous kernel ${baseKernel}\\)'[^{]*\\{(?:[^}]|\\$\\{[a-z_]+\\})*linux /vmlinuz-${baseKernel} `));
    const state = JSON.parse((await esp.read('grub/cairn-boot.json'))!.toString()) as BootState;
    expect(state.kernel.release).toBe(update.version);
    expect(state.previousKernel?.release).toBe(baseKernel);
  });

  it('puts the firmware package\'s files into firmware.squashfs and none into the root', async () => {
    expect(await installed(FIRMWARE_PACKAGE)).toBe('install ok installed');
    const shipped = (await execa('dpkg-deb', ['-c', firmwareDeb])).stdout
      .split('\n')
      .map((l) => / \.\/(?:usr\/)?lib\/firmware\/(\S+)$/.exec(l)?.[1])
      .filter((f): f is string => !!f && !f.endsWith('/'));
    expect(shipped.length).toBeGreaterThan(0);
    const listing = (await execa('unsquashfs', ['-l', join(data(), 'firmware.squashfs')])).stdout;
    for (const f of shipped) {
      expect(listing).toContain(`squashfs-root/${f}`);
      expect(existsSync(join(root, 'usr/lib/firmware', f))).toBe(false);
    }
  });

  it('cairn kernel confirm, booted from the new kernel, removes the old kernel and its menu entry', async () => {
    await writeFile(join(data(), `modules-${baseKernel}.squashfs`), 'stand-in for the old modules image');
    const cli = join(process.cwd(), 'dist/cairn.mjs');
    const r = await execa('node', [cli, 'kernel', 'confirm', '--data', data(), '--esp', esp.device, '--running-kernel', update.version], { reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(`kernel ${baseKernel} removed`);
    expect(await esp.exists(`vmlinuz-${baseKernel}`)).toBe(false);
    expect(existsSync(join(data(), `modules-${baseKernel}.squashfs`))).toBe(false);
    expect((await esp.read('grub/grub.cfg'))!.toString()).not.toContain('previous kernel');
    expect(await esp.exists(`vmlinuz-${update.version}`)).toBe(true);
    expect(readFileSync(join(data(), `modules-${update.version}.squashfs`)).length).toBeGreaterThan(1 << 20);
  });

  it('apt install of GRUB puts a core made from it on the ESP, keeps cairn\'s menu, and writes nothing to /boot', async () => {
    const menu = (await esp.read('grub/grub.cfg'))!.toString();
    const r = await apt(['install', '-y', '--no-install-recommends', ...grubPackages]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await installed('grub-efi-amd64-bin')).toBe('install ok installed');
    // What the hook asks dpkg when it decides whether a kernel's package is gone.
    expect(await kernelPackageInstalled(root, update.version)).toBe(true);
    expect(await kernelPackageInstalled(root, '6.1.0-0-never-installed')).toBe(false);
    expect(r.stderr).toContain(`cairn: GRUB x86_64-efi ${grubVersion}: boot files written to /${EFI_CORE_PATH}`);
    const expected = scratch.path('expected.efi');
    await makeGrubCore('x86_64-efi', expected, scratch.path('.'), join(root, 'usr/lib/grub'));
    expect((await esp.read(EFI_CORE_PATH))?.equals(readFileSync(expected))).toBe(true);
    expect((await esp.read('grub/x86_64-efi/normal.mod'))?.equals(readFileSync(join(root, 'usr/lib/grub/x86_64-efi/normal.mod')))).toBe(true);
    // This ESP is a file system image alone, with no disk around it: the BIOS core has nowhere to go, and the record says so.
    expect((await readBootState(esp)).grub).toEqual({ 'x86_64-efi': grubVersion });
    expect((await esp.read('grub/grub.cfg'))!.toString()).toBe(menu);
    expect(existsSync(join(root, 'boot/grub'))).toBe(false);
    const stub = await withChroot(root, [], () => inChroot(root, ['grub-install', '/dev/sda']));
    expect(stub.stderr).toContain('grub-install: cairn writes GRUB\'s boot files itself');
  });
});
