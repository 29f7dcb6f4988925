import { existsSync, statSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { classify, type ClassRule } from '../../apk/classify.js';
import { CairnError } from '../../lib/errors.js';
import { GRUB_LIB } from '../../grub/core.js';
import { log } from '../../lib/log.js';
import { withTempDir } from '../../lib/resources.js';
import { run } from '../../lib/run.js';
import { modulesImage } from '../../names.js';
import { firmwareDirOf, installFirmware } from '../firmware.js';
import { forgetRemovedKernels, installKernel, kernelPayloads, removalLines, type KernelInstallReport, type RemovalReport } from '../kernel.js';
import { grubUpdateLines, updateGrubBootFiles, type GrubUpdate } from '../grub.js';
import type { SystemTarget } from '../target.js';
import { debPaths, readDebInfo, sha256File, unpackDeb, type DebInfo } from './deb.js';

/**
 * cairn on a Debian base: apt hands the hook every .deb before dpkg runs
 * (`DPkg::Pre-Install-Pkgs`). Kernels and firmware are put where cairn keeps
 * them (modules and firmware images on the data partition, the kernel and
 * its initramfs on the ESP), and dpkg, told by /etc/dpkg/dpkg.cfg.d/cairn to
 * leave /lib/modules, /lib/firmware and /boot alone, installs the rest and
 * records the package as installed. The .deb itself is never changed: apt
 * has checked it against the signed index, and the hook checks again before
 * it trusts a kernel, so no local signing key is needed on Debian.
 */

/** Debian's names for the special classes: linux-image-<release> ships a kernel, firmware-* ships firmware. */
export const DEBIAN_CLASS_RULES: readonly ClassRule[] = [
  { class: 'kernel', include: ['linux-image-*'], exclude: ['linux-image-*-dbg', 'linux-image-*-dbgsym'] },
  { class: 'firmware', include: ['firmware-*', 'linux-firmware*', '*-microcode'] },
];

/** The paths dpkg leaves out (dpkg.cfg.d/cairn) and cairn puts in images instead. */
export const DPKG_EXCLUDES = ['/lib/modules/*', '/usr/lib/modules/*', '/lib/firmware/*', '/usr/lib/firmware/*', '/boot/*'];

export interface HookOptions {
  /** The root dpkg installs into ("/" on a running stick). */
  root: string;
  rules?: readonly ClassRule[];
}

export interface HookPackage {
  name: string;
  version: string;
  kernels: KernelInstallReport[];
  firmwareBytes?: number;
}

/** The .deb paths in what apt writes to the hook (version 1: one file name per line). */
export function debsFromHookInput(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.endsWith('.deb'));
}

/**
 * Handles the packages of one apt run. Any failure stops apt before dpkg
 * runs, so nothing is half-installed; what was already written for an
 * earlier package stays whole (each file is written temp, fsync, rename).
 */
export async function preInstall(t: SystemTarget, debs: readonly string[], o: HookOptions): Promise<HookPackage[]> {
  const done: HookPackage[] = [];
  for (const path of debs) {
    const info = await readDebInfo(path);
    const named = classify(info.name, o.rules ?? DEBIAN_CLASS_RULES) === 'kernel';
    // A kernel package is unpacked at once; any other is listed first, and
    // unpacked only when it ships firmware (each pass decompresses the .deb).
    if (!named) {
      const paths = await debPaths(path);
      if (paths.some((p) => /^(usr\/)?lib\/modules\/[^/]+\/kernel\//.test(p))) {
        log.warn({ pkg: info.name }, 'modules outside a kernel package are not installed (dpkg leaves /lib/modules to cairn)');
      }
      if (!paths.some((p) => /^(usr\/)?lib\/firmware\/./.test(p))) continue;
    }
    await requireSignedOrigin(info);
    const pkg = await withTempDir('.cairn-deb-', async (dir) => {
      say(`${info.name} ${info.version}: unpacking`);
      await unpackDeb(path, dir);
      const pkg: HookPackage = { name: info.name, version: info.version, kernels: [] };
      for (const payload of named ? await kernelPayloads(dir) : []) {
        say(`${info.name}: kernel ${payload.release}: modules image, initramfs and ESP files`);
        const report = await installKernel(t, payload);
        pkg.kernels.push(report);
        say(`${info.name}: ${payload.release} boots by default${report.previous ? `; ${report.previous} stays in the menu until it has booted` : ''}`);
        // The package's postinst runs depmod, which needs the directory.
        await mkdir(join(o.root, 'lib/modules', payload.release), { recursive: true });
      }
      if (firmwareDirOf(dir)) {
        say(`${info.name}: adding its firmware to firmware.squashfs`);
        pkg.firmwareBytes = await installFirmware(t, dir);
      }
      return pkg;
    }, t.dataDir);
    if (pkg.kernels.length || pkg.firmwareBytes !== undefined) done.push(pkg);
  }
  return done;
}

export interface PostInvokeReport {
  /** Releases whose /lib/modules/<release> left by a kernel's scripts was removed. */
  removed: string[];
  grub: GrubUpdate[];
  kernels: RemovalReport;
}

/**
 * After dpkg:
 * - what a kernel's postinst left in /lib/modules/<release> (depmod's empty
 *   indexes) goes, for every release that has a modules image and is not
 *   mounted, so no saved state carries it; the next boot of that kernel
 *   mounts its image there;
 * - where a GRUB package brought another GRUB version than the stick boots,
 *   the boot files are remade from it (src/packages/grub.ts). grub-install
 *   and grub-mkconfig are set aside on a cairn, so GRUB's own scripts wrote
 *   nothing;
 * - a kernel whose package is gone leaves the stick (forgetRemovedKernels).
 */
export async function postInvoke(t: SystemTarget, o: HookOptions): Promise<PostInvokeReport> {
  const removed: string[] = [];
  const dir = join(o.root, 'lib/modules');
  for (const release of existsSync(dir) ? await readdir(dir) : []) {
    const path = join(dir, release);
    if (release === t.runningKernel || !existsSync(join(t.dataDir, modulesImage(release)))) continue;
    if (isMountPoint(path)) continue;
    await rm(path, { recursive: true, force: true });
    removed.push(release);
  }
  const grub = await updateGrubBootFiles(t, { libDir: join(o.root, GRUB_LIB) });
  grubUpdateLines(grub).forEach(say);
  const kernels = await forgetRemovedKernels(t, (release) => kernelPackageInstalled(o.root, release));
  removalLines(kernels).forEach(say);
  return { removed, grub, kernels };
}

/** Whether dpkg has a package of a kernel release installed (linux-image-<release>, or its -unsigned build). */
export async function kernelPackageInstalled(root: string, release: string): Promise<boolean> {
  const r = await run(
    'dpkg-query',
    ['--admindir', join(root, 'var/lib/dpkg'), '-W', '-f', '${db:Status-Abbrev}\n', `linux-image-${release}`, `linux-image-${release}-unsigned`],
    { timeoutMs: 60_000, okExitCodes: [1] },
  );
  return r.stdout.split('\n').some((l) => l.startsWith('ii'));
}

/** A directory on another file system than its parent: a mounted modules image. */
function isMountPoint(path: string): boolean {
  return statSync(path).dev !== statSync(dirname(path)).dev;
}

/**
 * A kernel or firmware package must be one apt knows from a signed index:
 * its SHA256 must be the one some repository's Packages file gives for that
 * name and version. apt checked it on download; this checks that what dpkg
 * is about to get is still that file, and refuses local .deb files.
 */
export async function requireSignedOrigin(info: DebInfo): Promise<void> {
  const r = await run('apt-cache', ['show', `${info.name}=${info.version}`], { timeoutMs: 120_000, okExitCodes: [100] });
  const known = [...r.stdout.matchAll(/^SHA256: ([0-9a-f]{64})$/gm)].map((m) => m[1]);
  const actual = await sha256File(info.path);
  if (!known.includes(actual)) {
    throw new CairnError(
      `${info.name} ${info.version} (${info.path}) is not a package apt knows from a signed repository` +
        (known.length ? ' (its checksum differs from the index)' : ''),
      { hint: 'cairn installs kernels and firmware only from signed repositories: add the repository with its key, apt-get update, and install by name' },
    );
  }
}

/** Progress on stderr, where apt shows a hook's output. */
function say(line: string): void {
  process.stderr.write(`cairn: ${line}\n`);
}
