import { existsSync } from 'node:fs';
import { chown, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { UsageError } from '../lib/errors.js';
import { run } from '../lib/run.js';
import { BOOT_STATE_FORMAT, ESP_PATHS, formatBootState, kernelFiles, menuFor, type BootState } from '../esp/bootState.js';
import { renderGrubConfig } from '../grub/render.js';
import { squashTree } from '../packages/images.js';
import type { PrimaryConsole, UpperType } from '../grub/menu.js';
import { buildInitramfs, defaultInitDir } from '../initramfs/build.js';
import { DATA, LABELS, modulesImage } from '../names.js';
import { ALPINE_KERNELS, alpineRoot, bootstrapRepositories, checkAlpineSources, DEFAULT_ALPINE_RELEASE, findApk, imageRepositories } from './alpine.js';
import { BASES, kernelVersions, type BaseName } from './base.js';
import { configureRoot } from './configure.js';
import { debianRoot } from './debian.js';
import { STICK_KDF, type LuksKdf } from './luks.js';
import { createDisk, writeImageBiosBoot, writeDataPartition, writeEsp } from './disk.js';
import { EFI_CORE_PATH, GRUB_PLATFORMS, grubModuleFiles, grubVersionOf, makeGrubCore } from '../grub/core.js';

export type ImagePhase = 'root' | 'configure' | 'images' | 'boot' | 'disk' | 'done';

export interface ImageOptions {
  base: BaseName;
  output: string;
  sizeMiB: number;
  user: string;
  password?: string;
  hostname: string;
  upper: UpperType;
  /** false: the data partition never grows to fill a larger stick (cairn.grow=0 on the menu's command lines). */
  grow?: boolean;
  /** Boot counting: the tries GRUB gives a new kernel or newest state (0: off; absent: 3). */
  bootTries?: number;
  /**
   * The kernel package. debian: linux-image-amd64 for sticks,
   * linux-image-cloud-amd64 for VMs; alpine: linux-lts or linux-virt.
   */
  kernelPackage: string;
  suite: string;
  mirror?: string;
  /** alpine: repository URLs or local directories, in apk's order (default: the release's main and community). */
  repositories?: string[];
  /** alpine: the release whose repositories are the default, e.g. v3.20. */
  alpineRelease?: string;
  /** alpine: the apk to bootstrap with (default: apk or apk.static on PATH). */
  apk?: string;
  /** alpine: the trusted keys (default /etc/apk/keys). */
  apkKeys?: string;
  cacheDir: string;
  workDir: string;
  primaryConsole: PrimaryConsole;
  luks: boolean;
  /** The data partition's passphrase, with luks. */
  passphrase?: string;
  /** How the passphrase is stretched (default STICK_KDF); tests under emulation take a cheaper one. */
  luksKdf?: LuksKdf;
  /** The swap file on the data partition, in MiB; 0 for none. */
  swapMiB: number;
  onPhase?: (phase: ImagePhase) => void;
}

export interface ImageReport {
  output: string;
  bytes: number;
  kernelVersion: string;
  flavor: string;
  seconds: number;
  files: Record<string, number>;
}

const ESP_MIB = 256;
/** Below this a stick holds the system but leaves no room to save. */
export const MIN_SIZE_MIB = 1024;
/** 16 TiB: beyond any USB stick, and a size the image's arithmetic stays exact at. */
export const MAX_SIZE_MIB = 16 * 1024 * 1024;

/**
 * Builds a stick image (DESIGN.md "On the stick"): a root for the base, split
 * into the base image, the kernel's modules and firmware; the kernel and
 * cairn's initramfs on the ESP with GRUB for UEFI and legacy BIOS; the
 * partitions written straight into the image file.
 */
export async function buildImage(o: ImageOptions): Promise<ImageReport> {
  const started = Date.now();
  checkOptions(o);
  const base = BASES[o.base];
  const bootstrap = await bootstrapFor(o);
  const root = join(o.workDir, 'root');
  const dataStage = join(o.workDir, 'data');
  const espStage = join(o.workDir, 'esp');
  await rm(o.workDir, { recursive: true, force: true });
  await mkdir(o.workDir, { recursive: true });
  for (const d of [dataStage, espStage]) await mkdir(d, { recursive: true });

  o.onPhase?.('root');
  await bootstrap.root(root);
  const [kernelVersion, ...others] = await kernelVersions(root, base);
  if (!kernelVersion || others.length) throw new UsageError(`expected one kernel in the root, found ${[kernelVersion, ...others].join(', ') || 'none'}`);
  const flavor = await base.flavor(root, kernelVersion);

  o.onPhase?.('configure');
  const initDir = defaultInitDir();
  await configureRoot(root, base, {
    hostname: o.hostname,
    user: o.user,
    password: o.password,
    initDir,
    swapMiB: o.swapMiB,
    dataDir: dataStage,
    repositories: bootstrap.imageRepositories,
  });

  o.onPhase?.('images');
  // The base image keeps the mount points of what lives in images of its own.
  await squashTree(root, join(dataStage, DATA.rootfs), [
    '-wildcards',
    '-e', `${base.modulesDir}/*/*`, `${base.firmwareDir}/*`, 'boot/*', ...base.packageCache, 'proc/*', 'sys/*', 'dev/*', 'run/*', 'tmp/*',
  ]);
  await squashTree(join(root, base.modulesDir, kernelVersion), join(dataStage, modulesImage(kernelVersion)));
  const firmware = join(root, base.firmwareDir);
  await mkdir(firmware, { recursive: true });
  await squashTree(firmware, join(dataStage, DATA.firmware));
  await mkdir(join(dataStage, DATA.userDir));
  const [uid, gid] = await userIds(root, o.user);
  await chown(join(dataStage, DATA.userDir), uid, gid);

  o.onPhase?.('boot');
  const kernelName = ESP_PATHS.kernel(kernelVersion);
  const initrdName = ESP_PATHS.initrd(kernelVersion);
  const { files, biosCore } = await stageBootFiles({
    espStage,
    workDir: o.workDir,
    dataStage,
    kernelVersion,
    vmlinuz: join(root, base.kernelImage(kernelVersion, flavor)),
    // The stick's own programs, as on the running stick a kernel install
    // builds its initramfs from them: the same cryptsetup unlocks at every boot.
    writeInitrd: (output) => buildInitramfs({ kernelVersion, modulesDir: root, output, luks: o.luks, initDir, programRoot: root }),
    upper: o.upper,
    grow: o.grow,
    bootTries: o.bootTries,
    primaryConsole: o.primaryConsole,
    luks: o.luks,
  });

  o.onPhase?.('disk');
  const partial = `${o.output}.partial`;
  await rm(partial, { force: true });
  const layout = await createDisk(partial, o.sizeMiB * 1024 * 1024, ESP_MIB);
  await writeEsp(partial, layout, files, o.workDir);
  await writeDataPartition(partial, layout, dataStage, {
    workDir: o.workDir,
    luks: o.luks ? { passphrase: o.passphrase ?? '', kdf: o.luksKdf ?? STICK_KDF } : undefined,
  });
  await writeImageBiosBoot(partial, layout, biosCore);
  await run('sync', ['-f', partial], { timeoutMs: 600_000 }).catch(() => undefined);
  await rename(partial, o.output);

  const sizes: Record<string, number> = {};
  for (const f of [DATA.rootfs, modulesImage(kernelVersion), DATA.firmware]) sizes[f] = (await stat(join(dataStage, f))).size;
  sizes[initrdName] = (await stat(join(espStage, initrdName))).size;
  sizes[kernelName] = (await stat(join(espStage, kernelName))).size;
  o.onPhase?.('done');
  return { output: o.output, bytes: (await stat(o.output)).size, kernelVersion, flavor, seconds: (Date.now() - started) / 1000, files: sizes };
}

export interface BootFilesOptions {
  espStage: string;
  workDir: string;
  /** The data partition's staging directory: the menu lists the states in it. */
  dataStage: string;
  kernelVersion: string;
  /** The kernel to boot, on the build host. */
  vmlinuz: string;
  writeInitrd: (output: string) => Promise<unknown>;
  upper: UpperType;
  grow?: boolean;
  bootTries?: number;
  primaryConsole: PrimaryConsole;
  luks: boolean;
}

/**
 * Stages what the ESP holds (the kernel, its initramfs, the boot record, the
 * menu, the EFI core and GRUB's modules for its prompt) and makes the BIOS
 * core. Returns the ESP's files by their path on it, and the BIOS core.
 */
export async function stageBootFiles(o: BootFilesOptions): Promise<{ files: Map<string, string>; biosCore: string }> {
  const kernelName = ESP_PATHS.kernel(o.kernelVersion);
  const initrdName = ESP_PATHS.initrd(o.kernelVersion);
  const files = new Map<string, string>();
  await run('cp', [o.vmlinuz, join(o.espStage, kernelName)], { timeoutMs: 60_000 });
  files.set(kernelName, join(o.espStage, kernelName));
  await o.writeInitrd(join(o.espStage, initrdName));
  files.set(initrdName, join(o.espStage, initrdName));
  await mkdir(join(o.espStage, 'grub'), { recursive: true });
  const grub: NonNullable<BootState['grub']> = {};
  const bootState: BootState = {
    format: BOOT_STATE_FORMAT,
    settings: {
      esp: { by: 'label', value: LABELS.esp },
      dataSpec: `LABEL=${LABELS.data}`,
      upper: o.upper,
      ...(o.grow === false ? { grow: false } : {}),
      ...(o.bootTries !== undefined ? { bootTries: o.bootTries } : {}),
      serialSpeed: 115200,
      primaryConsole: o.primaryConsole,
    },
    timeoutSeconds: 3,
    luks: o.luks,
    kernel: kernelFiles(o.kernelVersion),
    grub,
  };
  await mkdir(join(o.espStage, 'EFI', 'BOOT'), { recursive: true });
  await makeGrubCore('x86_64-efi', join(o.espStage, EFI_CORE_PATH), o.workDir);
  files.set(EFI_CORE_PATH, join(o.espStage, EFI_CORE_PATH));
  const biosCore = join(o.workDir, 'core.img');
  await makeGrubCore('i386-pc', biosCore, o.workDir);
  for (const platform of GRUB_PLATFORMS) {
    grub[platform] = await grubVersionOf(platform);
    for (const f of await grubModuleFiles(platform)) files.set(`grub/${platform}/${basename(f)}`, f);
  }
  await writeFile(join(o.espStage, ESP_PATHS.bootState), formatBootState(bootState));
  files.set(ESP_PATHS.bootState, join(o.espStage, ESP_PATHS.bootState));
  await writeFile(join(o.espStage, ESP_PATHS.menu), renderGrubConfig(await menuFor(bootState, o.dataStage)));
  files.set(ESP_PATHS.menu, join(o.espStage, ESP_PATHS.menu));
  return { files, biosCore };
}

/**
 * How the base's root is made, with everything it needs from outside this
 * machine checked first: a missing apk, an unreachable repository or
 * missing keys stop the build before anything is written.
 */
async function bootstrapFor(o: ImageOptions): Promise<{ root: (target: string) => Promise<void>; imageRepositories: string[] }> {
  if (o.base === 'debian') return { root: (target) => debianRoot(o, target), imageRepositories: [] };
  const release = o.alpineRelease ?? DEFAULT_ALPINE_RELEASE;
  const repositories = bootstrapRepositories(o.repositories, release);
  const apk = await findApk(o.apk);
  const keysDir = resolve(o.apkKeys ?? '/etc/apk/keys');
  await checkAlpineSources({ repositories, keysDir });
  return {
    root: (target) => alpineRoot({ repositories, apk, keysDir, kernelPackage: o.kernelPackage, luks: o.luks, cacheDir: o.cacheDir }, target),
    imageRepositories: imageRepositories(repositories, release),
  };
}

function checkOptions(o: ImageOptions): void {
  if (!(o.base in BASES)) throw new UsageError(`base "${o.base}" is not debian or alpine`);
  if (o.base === 'alpine' && !(ALPINE_KERNELS as readonly string[]).includes(o.kernelPackage)) {
    throw new UsageError(`--kernel ${o.kernelPackage} is not an Alpine kernel cairn builds with: use ${ALPINE_KERNELS.join(' or ')}`);
  }
  if (o.sizeMiB < MIN_SIZE_MIB) throw new UsageError(`--size ${o.sizeMiB} MiB is too small: a stick image needs at least ${MIN_SIZE_MIB} MiB`);
  if (!Number.isSafeInteger(o.sizeMiB) || o.sizeMiB > MAX_SIZE_MIB) {
    throw new UsageError(`--size ${o.sizeMiB} MiB is larger than any USB stick: at most ${MAX_SIZE_MIB} MiB (16 TiB)`);
  }
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(o.user)) throw new UsageError(`--user "${o.user}" is not a valid user name`);
  if (!/^[a-zA-Z0-9][a-zA-Z0-9-]{0,62}$/.test(o.hostname)) throw new UsageError(`--hostname "${o.hostname}" is not a valid host name`);
  if (o.luks && !o.passphrase) throw new UsageError('an encrypted data partition needs a passphrase', { hint: 'pass --passphrase-file FILE (- for standard input)' });
  if (existsSync(o.output) && !o.output.endsWith('.img')) {
    throw new UsageError(`${o.output} exists and is not an .img file: cairn image build writes image files only`);
  }
}

async function userIds(root: string, user: string): Promise<[number, number]> {
  const line = (await readFile(join(root, 'etc/passwd'), 'utf8')).split('\n').find((l) => l.startsWith(`${user}:`));
  const f = line?.split(':');
  if (!f) throw new UsageError(`user ${user} is missing from the image`);
  return [Number(f[2]), Number(f[3])];
}
