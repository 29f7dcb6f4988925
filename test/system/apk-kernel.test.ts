/**
 * cairn apk installing a kernel and firmware on a stick worked on from
 * outside, with the REAL installKernel and installFirmware, but apk itself a
 * STAND-IN (test/helpers/apk-standin.ts): real apk-tools does not exist on
 * these machines and Alpine's mirrors are out of reach. The stand-in serves
 * fetch from packages built here with src/apk/write.ts, signed with a test
 * "upstream" key it trusts, prints apk 2.14's --simulate format, checks
 * signatures like apk and records what it "installs" (it extracts nothing
 * and runs no scripts).
 *
 * The kernel package is Alpine-shaped (linux-virt: boot/vmlinuz-virt,
 * lib/modules/<release>/, usr/share/kernel/virt/kernel.release, a
 * post-install and a trigger) but holds Debian's cloud kernel
 * (test/helpers/vm-kernel.ts) under its own release name, so the initramfs
 * is built from real modules. The ESP is a FAT image written with mtools,
 * the data partition a directory, as in kernel-install.test.ts.
 */
import { execa } from 'execa';
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LOCAL_KEY } from '../../src/apk/localKey.js';
import { escapeRegExp } from '../../src/lib/format.js';
import { readApk } from '../../src/apk/read.js';
import { verifyApk } from '../../src/apk/verify.js';
import { BOOT_STATE_FORMAT, formatBootState, kernelFiles, type BootState } from '../../src/esp/bootState.js';
import { Esp } from '../../src/esp/esp.js';
import { DATA, modulesImage } from '../../src/names.js';
import { dir, file, harness, symlink, treeEntries, upstreamPackage, type Harness } from '../helpers/apk-harness.js';
import { cairn, CLI } from '../helpers/system.js';
import { requireHostTools } from '../helpers/vm-fixtures.js';
import { cloudKernelDeb, debianCloudKernel, type TestKernel } from '../helpers/vm-kernel.js';

const OLD = '6.1.0-1-old';
const FLAVOR = 'virt';
const KERNEL_PKG = `linux-${FLAVOR}`;
const FIRMWARE_PKG = 'linux-firmware-intel';
const FIRMWARE_VERSION = '20231111-r1';

let kernel: TestKernel;
/** The kernel package's version, Alpine style, from the Debian package's (6.1.192-2 -> 6.1.192-r2). */
let kernelVersion: string;
/** The test's harness, removed after it. */
let current: Harness | undefined;
/** The test "upstream" key every harness here trusts, so the kernel package (100 MB, slow to gzip) is built once. */
let upstreamKey: KeyObject;
let kernelBytes: Buffer | undefined;

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('these tests need root (files owned by root in the modules image): run them as root');
  requireHostTools('these tests', ['mksquashfs', 'unsquashfs', 'mcopy', 'mdir', 'mkfs.vfat', 'depmod', 'busybox', 'apt-get', 'dpkg-deb']);
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build`);
  kernel = await debianCloudKernel();
  const m = /_([0-9][0-9.]*)-([0-9]+)_[a-z0-9]+\.deb$/.exec((await cloudKernelDeb()).deb);
  if (!m) throw new Error('cannot read the cloud kernel package\'s version from its file name');
  kernelVersion = `${m[1]}-r${m[2]}`;
  upstreamKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
}, 600_000);

afterEach(() => {
  current?.cleanup();
  current = undefined;
});

/** A stand-in apk's world: the Alpine root, the stick's data partition, upstream packages signed with upstreamKey. */
async function alpineHarness(): Promise<Harness> {
  current = await harness({ cli: CLI, upstreamKey });
  return current;
}

/** Alpine's linux-virt as abuild lays it out, holding Debian's cloud kernel, in the harness's upstream directory. */
function alpineKernelPackage(h: Harness): Buffer {
  if (kernelBytes) {
    writeFileSync(join(h.upstream, `${KERNEL_PKG}-${kernelVersion}.apk`), kernelBytes);
    return kernelBytes;
  }
  const rel = kernel.version;
  const boot = join(kernel.root, 'boot');
  kernelBytes = upstreamPackage(h, {
    name: KERNEL_PKG,
    version: kernelVersion,
    data: [
      dir('boot'),
      file(`boot/vmlinuz-${FLAVOR}`, readFileSync(kernel.vmlinuz)),
      file(`boot/config-${FLAVOR}`, readFileSync(join(boot, `config-${rel}`))),
      file(`boot/System.map-${FLAVOR}`, readFileSync(join(boot, `System.map-${rel}`))),
      dir('lib'),
      ...treeEntries(join(kernel.root, 'lib/modules'), 'lib/modules'),
      dir('usr'),
      dir('usr/share'),
      dir('usr/share/kernel'),
      dir(`usr/share/kernel/${FLAVOR}`),
      file(`usr/share/kernel/${FLAVOR}/kernel.release`, `${rel}\n`),
    ],
    scripts: [
      { name: '.post-install', content: `#!/bin/sh\ndepmod ${rel}\n` },
      { name: '.trigger', content: '#!/bin/sh\nfor d; do depmod "${d##*/}"; done\n' },
    ],
    extra: ['depend = linux-firmware-any mkinitfs', 'triggers = /lib/modules/*'],
  });
  return kernelBytes;
}

/** A small firmware package, pulled in by the kernel's linux-firmware-any. */
function alpineFirmwarePackage(h: Harness): Buffer {
  return upstreamPackage(h, {
    name: FIRMWARE_PKG,
    version: FIRMWARE_VERSION,
    arch: 'noarch',
    data: [
      dir('lib'),
      dir('lib/firmware'),
      dir('lib/firmware/intel'),
      file('lib/firmware/intel/ibt-20-1-3.sfi', Buffer.alloc(3000, 0x22)),
      file('lib/firmware/intel/ibt-20-1-3.ddc', Buffer.alloc(200, 0x23)),
      symlink('lib/firmware/intel/ibt-current.sfi', 'ibt-20-1-3.sfi'),
      dir('usr'),
      dir('usr/share'),
      dir('usr/share/licenses'),
      dir(`usr/share/licenses/${FIRMWARE_PKG}`),
      file(`usr/share/licenses/${FIRMWARE_PKG}/LICENCE.intel`, 'licence text\n'),
    ],
    extra: ['provides = linux-firmware-any'],
  });
}

/** A stick's ESP as a FAT image, with a boot record and menu booting OLD, and its kernel. */
async function stickEsp(h: Harness, espMiB: number): Promise<Esp> {
  const image = join(h.dir, 'esp.img');
  await execa('truncate', ['-s', `${espMiB}M`, image]);
  await execa('mkfs.vfat', ['-F', espMiB >= 64 ? '32' : '16', '-n', 'CAIRN-ESP', image]);
  const esp = new Esp(image);
  const state: BootState = {
    format: BOOT_STATE_FORMAT,
    settings: { esp: { by: 'label', value: 'CAIRN-ESP' }, dataSpec: 'LABEL=cairn-data', upper: 'tmpfs', serialSpeed: 115200, primaryConsole: 'serial' },
    timeoutSeconds: 3,
    luks: false,
    kernel: kernelFiles(OLD),
  };
  await esp.install('grub/cairn-boot.json', { data: formatBootState(state) });
  await esp.install('grub/grub.cfg', { data: '# the menu before the update\n' });
  await esp.install(`vmlinuz-${OLD}`, { data: 'the old kernel' });
  await esp.install(`initramfs-${OLD}`, { data: 'the old initramfs' });
  return esp;
}

/** The transaction `apk add linux-virt` makes: the firmware it depends on, then the kernel. */
function addScenario(h: Harness): void {
  h.scenario({
    changes: {
      add: [
        { message: 'Installing', name: FIRMWARE_PKG, version: FIRMWARE_VERSION },
        { message: 'Installing', name: KERNEL_PKG, version: kernelVersion },
      ],
    },
  });
}

function apkAdd(h: Harness, esp: Esp) {
  const args = ['apk', '--data', h.data, '--esp', esp.device, '--running-kernel', OLD, '--', '--root', h.root, 'add', KERNEL_PKG];
  return cairn(args, h.env());
}

/** The stand-in's calls that would have installed something (not simulations, updates or fetches). */
const installRuns = (h: Harness) => h.calls().filter((c) => c.includes('add') && !c.includes('--simulate'));

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A GRUB menu entry, by id and title, booting a kernel release with its own initramfs. */
const entry = (id: string, title: string, release: string) =>
  new RegExp(`menuentry '${title}' \\$menuentry_id_option ${id} \\{(?:[^}]|\\$\\{[a-z_]+\\})*\\n\\tlinux /vmlinuz-${escapeRegExp(release)} cairn\\.boot=default [^}]*\\n\\tinitrd /initramfs-${escapeRegExp(release)}\\n\\}`);

/** Every .ko under the Debian tree's modules directory, relative to it. */
function moduleFiles(): string[] {
  const base = join(kernel.root, 'lib/modules', kernel.version);
  const out: string[] = [];
  const walk = (abs: string) => {
    for (const name of readdirSync(abs)) {
      const path = join(abs, name);
      if (lstatSync(path).isDirectory()) walk(path);
      else if (/\.ko(\.[gx]z|\.zst)?$/.test(name)) out.push(relative(base, path));
    }
  };
  walk(base);
  return out.sort();
}

describe('cairn apk add of an Alpine kernel package, real installKernel and installFirmware (apk is a stand-in)', () => {
  it('puts the modules in an image, kernel and initramfs on the ESP and the firmware in firmware.squashfs; apk installs the repacks, world unpinned', async () => {
    const h = await alpineHarness();
    const upstreamBytes = alpineKernelPackage(h);
    alpineFirmwarePackage(h);
    addScenario(h);
    const esp = await stickEsp(h, 64);
    const rel = kernel.version;

    const r = await apkAdd(h, esp);
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stderr).toContain(`cairn: ${KERNEL_PKG}: kernel ${rel}: modules in ${modulesImage(rel)}, kernel and initramfs on the ESP, boots by default (${OLD} kept in the menu until it has booted)`);

    // Modules: an image on the data partition holding every module of the package.
    const listing = (await execa('unsquashfs', ['-l', join(h.data, modulesImage(rel))])).stdout;
    const inImage = new Set(listing.split('\n').map((l) => l.replace(/^squashfs-root\//, '')));
    const modules = moduleFiles();
    expect(modules.length).toBeGreaterThan(100);
    expect(modules.filter((m) => !inImage.has(m))).toEqual([]);
    expect(inImage.has('modules.dep')).toBe(true);

    // The ESP: the package's own kernel, byte for byte, and a gzip'd initramfs built from its modules.
    const shipped = readApk(upstreamBytes).dataEntries.find((e) => e.name === `boot/vmlinuz-${FLAVOR}`)!.content!;
    expect(sha256((await esp.read(`vmlinuz-${rel}`))!)).toBe(sha256(shipped));
    expect(sha256(shipped)).toBe(sha256(readFileSync(kernel.vmlinuz)));
    const initrd = (await esp.read(`initramfs-${rel}`))!;
    expect(initrd.subarray(0, 2).toString('hex')).toBe('1f8b');
    expect((await esp.read(`vmlinuz-${OLD}`))!.toString()).toBe('the old kernel');

    // The menu boots the new kernel by default and keeps the old one as an entry.
    const menu = (await esp.read('grub/grub.cfg'))!.toString();
    expect(menu).toMatch(/^set default=cairn-default$/m);
    expect(menu).toMatch(entry('cairn-default', 'cairn \\(newest state\\)[^\']*', rel));
    expect(menu).toMatch(entry('cairn-previous-kernel', `cairn \\(newest state, previous kernel ${escapeRegExp(OLD)}\\)`, OLD));
    const state = JSON.parse((await esp.read('grub/cairn-boot.json'))!.toString()) as BootState;
    expect(state.kernel.release).toBe(rel);
    expect(state.previousKernel?.release).toBe(OLD);

    // Firmware: in firmware.squashfs, the link kept.
    const fw = (await execa('unsquashfs', ['-lls', join(h.data, DATA.firmware)])).stdout;
    expect(fw).toMatch(/squashfs-root\/intel\/ibt-20-1-3\.sfi$/m);
    expect(fw).toMatch(/squashfs-root\/intel\/ibt-20-1-3\.ddc$/m);
    expect(fw).toMatch(/squashfs-root\/intel\/ibt-current\.sfi -> ibt-20-1-3\.sfi$/m);

    // apk ran once for the command and installed the repacks: no modules, no boot files, no scripts, signed by the local key.
    expect(installRuns(h)).toHaveLength(1);
    const pkgs = join(h.root, 'lib/apk/db/standin-packages');
    const installedKernel = readFileSync(join(pkgs, `${KERNEL_PKG}.apk`));
    const repack = readApk(installedKernel);
    const names = repack.dataEntries.map((e) => e.name);
    expect(names.filter((n) => n.startsWith('lib/modules/') || n === 'boot' || n.startsWith('boot/'))).toEqual([]);
    expect(names).toContain(`usr/share/kernel/${FLAVOR}/kernel.release`);
    expect(repack.controlEntries.map((e) => e.name)).toEqual(['.PKGINFO']);
    expect(repack.pkginfo.triggers).toEqual([]);
    expect(repack.pkginfoText).toMatch(/^# cairn: kernel package repacked by cairn's apk wrapper from Q1\S+ signed by alpine-devel@/m);
    const localOnly = join(h.dir, 'local-key-only');
    mkdirSync(localOnly);
    copyFileSync(join(h.keysDir, LOCAL_KEY.publicName), join(localOnly, LOCAL_KEY.publicName));
    expect((await verifyApk(installedKernel, { trustedKeysDir: localOnly })).keyName).toBe(LOCAL_KEY.publicName);
    const installedFirmware = readFileSync(join(pkgs, `${FIRMWARE_PKG}.apk`));
    expect(readApk(installedFirmware).dataEntries.map((e) => e.name).filter((n) => n.startsWith('lib/firmware'))).toEqual([]);
    expect((await verifyApk(installedFirmware, { trustedKeysDir: localOnly })).keyName).toBe(LOCAL_KEY.publicName);
    expect(readFileSync(join(h.root, 'lib/apk/db/standin-scripts'), 'utf8')).not.toContain(KERNEL_PKG);

    // world: what the user typed, no firmware, no file name, no version.
    expect(readFileSync(join(h.root, 'etc/apk/world'), 'utf8')).toBe(`alpine-base\n${KERNEL_PKG}\n`);
    // Nothing left behind: no temp trees on the data partition, no marker for mkinitfs's trigger.
    expect(readdirSync(h.data).filter((f) => f.startsWith('.cairn-') || f.endsWith('.tmp'))).toEqual([]);
    expect(existsSync(join(h.root, 'run/cairn/apk-kernels'))).toBe(false);
  }, 600_000);

  it('refuses an ESP too small for the kernel and its initramfs: clear error naming the firmware already applied, apk never asked to install, no modules image', async () => {
    const h = await alpineHarness();
    alpineKernelPackage(h);
    alpineFirmwarePackage(h);
    addScenario(h);
    const esp = await stickEsp(h, 16);
    const rel = kernel.version;

    const r = await apkAdd(h, esp);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(
      new RegExp(`${KERNEL_PKG} ${escapeRegExp(kernelVersion)}: installing its kernel files on the stick failed: the ESP \\(.*\\) has [\\d.]+ \\w+ free; the kernel and its initramfs need`),
    );
    // The firmware, applied before the kernel (apk's order: dependencies first), is already in firmware.squashfs: said so.
    expect(r.stderr).toContain(`apk was not run; already on the stick: ${FIRMWARE_PKG}: firmware added to firmware.squashfs`);
    expect(r.stderr).not.toMatch(/nothing was installed/);
    expect((await execa('unsquashfs', ['-l', join(h.data, DATA.firmware)])).stdout).toMatch(/squashfs-root\/intel\/ibt-20-1-3\.sfi$/m);

    expect(installRuns(h)).toEqual([]);
    expect(existsSync(join(h.root, 'lib/apk/db/installed'))).toBe(false);
    expect(readFileSync(join(h.root, 'etc/apk/world'), 'utf8')).toBe('alpine-base\n');
    expect(readdirSync(h.data).filter((f) => f.startsWith('modules-'))).toEqual([]);
    expect(readdirSync(h.data).filter((f) => f.startsWith('.cairn-') || f.endsWith('.tmp'))).toEqual([]);
    expect(await esp.exists(`vmlinuz-${rel}`)).toBe(false);
    expect(await esp.exists(`initramfs-${rel}`)).toBe(false);
    expect((await esp.read('grub/grub.cfg'))!.toString()).toBe('# the menu before the update\n');
  }, 600_000);
});
