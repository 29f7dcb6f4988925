import { existsSync } from 'node:fs';
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { armTries, bootTriesOf } from '../boot/counting.js';
import { ESP_PATHS, kernelFiles, readBootState, writeBootState, type BootState } from '../esp/bootState.js';
import type { KernelFiles } from '../grub/menu.js';
import { buildInitramfs } from '../initramfs/build.js';
import { unlinkDurably } from '../lib/durable.js';
import { CairnError, PartitionFullError } from '../lib/errors.js';
import { formatBytes } from '../lib/format.js';
import { log } from '../lib/log.js';
import { withTempDir } from '../lib/resources.js';
import { run } from '../lib/run.js';
import { modulesImage, modulesImageRelease } from '../names.js';
import { writeSystemImage } from './images.js';
import type { SystemTarget } from './target.js';

/** A kernel as an unpacked package holds it. */
export interface KernelPayload {
  /** The unpacked package's root. */
  tree: string;
  /** The kernel release (`uname -r`): the name of its lib/modules directory. */
  release: string;
  /** The kernel image's path. */
  image: string;
}

export interface KernelInstallReport {
  release: string;
  modulesImage: string;
  modulesBytes: number;
  kernelBytes: number;
  initramfsBytes: number;
  /** The kernel the menu keeps as a second choice until this one has booted. */
  previous?: string;
  /** Kernels whose files were removed: superseded before they ever booted. */
  removed: string[];
}

const MODULE_DIRS = ['lib/modules', 'usr/lib/modules'];

/**
 * The kernels in an unpacked package: each lib/modules/<release> that holds
 * modules, with its image from boot/ (Debian's vmlinuz-<release>, or
 * Alpine's single vmlinuz-<flavor>).
 */
export async function kernelPayloads(tree: string): Promise<KernelPayload[]> {
  const payloads: KernelPayload[] = [];
  const images = existsSync(join(tree, 'boot')) ? (await readdir(join(tree, 'boot'))).filter((f) => f.startsWith('vmlinuz')) : [];
  for (const dir of MODULE_DIRS) {
    const base = join(tree, dir);
    if (!existsSync(base)) continue;
    for (const release of (await readdir(base)).sort()) {
      if (!existsSync(join(base, release, 'kernel'))) continue;
      const image = images.includes(`vmlinuz-${release}`) ? `vmlinuz-${release}` : images.length === 1 ? images[0] : undefined;
      if (!image) {
        throw new CairnError(`the package ships modules for ${release} but ${images.length ? 'several kernel images' : 'no kernel image'} in boot/`);
      }
      payloads.push({ tree, release, image: join(tree, 'boot', image) });
    }
  }
  return payloads;
}

/** The modules directory of a payload. */
function modulesDirOf(p: KernelPayload): string {
  const dir = MODULE_DIRS.map((d) => join(p.tree, d, p.release)).find((d) => existsSync(d));
  if (!dir) throw new CairnError(`no lib/modules/${p.release} in ${p.tree}`);
  return dir;
}

/**
 * Installs a kernel on the stick so that nothing of it is in the RAM layer:
 *
 *   1. its modules become modules-<release>.squashfs on the data partition;
 *   2. its image and a new initramfs go onto the ESP under names of their own;
 *   3. the boot record and the menu are rewritten with it as the default,
 *      and the kernel that runs now kept as an entry until the new one has
 *      booted (confirmKernel drops it then).
 *
 * Each step writes a temp file, flushes and renames, and the menu changes
 * last: a power cut anywhere leaves the old menu with the old kernel's files
 * whole, or the new menu with the new kernel's files whole.
 */
export async function installKernel(t: SystemTarget, p: KernelPayload): Promise<KernelInstallReport> {
  const old = await readBootState(t.esp);
  const modulesDir = modulesDirOf(p);
  // Debian's packages leave modules.dep to depmod in their postinst.
  if (!existsSync(join(modulesDir, 'modules.dep'))) {
    const base = modulesDir.slice(0, -`/lib/modules/${p.release}`.length);
    await run('depmod', ['-b', base, p.release], { timeoutMs: 600_000, hint: 'install kmod (apt-get install kmod / apk add kmod)' });
  }

  return withTempDir('.cairn-kernel-', async (work) => {
    const initrd = join(work, 'initramfs');
    await buildInitramfs({ kernelVersion: p.release, modulesDir: p.tree, output: initrd, luks: old.luks, initDir: t.initDir });
    const kernelBytes = (await stat(p.image)).size;
    const initramfsBytes = (await stat(initrd)).size;
    await requireEspSpace(t, kernelBytes + initramfsBytes);

    log.info({ release: p.release }, 'writing the modules image');
    const modulesBytes = await writeSystemImage(modulesDir, t.dataDir, modulesImage(p.release));
    await t.esp.install(ESP_PATHS.kernel(p.release), { file: p.image });
    await t.esp.install(ESP_PATHS.initrd(p.release), { file: initrd });

    const next = nextBootState(old, kernelFiles(p.release), t.runningKernel);
    // On trial from the menu's first use of it: GRUB counts its boots (src/boot).
    if (next.kernel.release !== old.kernel.release) await armTries(t.esp, 'kernel', bootTriesOf(next));
    await writeBootState(t.esp, t.dataDir, next);
    const removed = droppedKernels(old, next).filter((r) => r !== t.runningKernel);
    for (const release of removed) await removeKernelFiles(t, release);
    return {
      release: p.release,
      modulesImage: modulesImage(p.release),
      modulesBytes,
      kernelBytes,
      initramfsBytes,
      ...(next.previousKernel ? { previous: next.previousKernel.release } : {}),
      removed,
    };
  }, t.dataDir);
}

/**
 * The boot record after installing `kernel`. The second choice is the kernel
 * known to boot: the running one if the record has it, else the old default.
 * A reinstall of the default changes nothing but the files.
 */
export function nextBootState(old: BootState, kernel: KernelFiles, running: string | undefined): BootState {
  if (old.kernel.release === kernel.release) return { ...old, kernel };
  const known = [old.kernel, old.previousKernel].filter((k): k is KernelFiles => k !== undefined);
  const previous = known.find((k) => k.release === running) ?? old.kernel;
  return { ...old, kernel, previousKernel: previous.release === kernel.release ? undefined : previous };
}

/** Releases the old record booted and the new one no longer does. */
export function droppedKernels(old: BootState, next: BootState): string[] {
  const kept = new Set([next.kernel.release, next.previousKernel?.release]);
  return [old.kernel.release, old.previousKernel?.release].filter((r): r is string => r !== undefined && !kept.has(r));
}

export interface ConfirmReport {
  /** The previous kernel dropped because the default one booted. */
  dropped?: string;
  /** Kernel files no boot record names (left by a power cut), removed. */
  orphans: string[];
}

/**
 * Run at boot: once the default kernel has booted, the previous one is no
 * longer needed and its files go. Booted from the previous kernel (picked
 * at the menu), nothing changes. Files of kernels the record does not name
 * (a power cut between writing them and the menu) go too, but never the
 * running kernel's.
 */
export async function confirmKernel(t: SystemTarget): Promise<ConfirmReport> {
  let state = await readBootState(t.esp);
  const report: ConfirmReport = { orphans: [] };
  if (state.previousKernel && t.runningKernel === state.kernel.release) {
    report.dropped = state.previousKernel.release;
    const { previousKernel: _dropped, ...rest } = state;
    state = rest;
    await writeBootState(t.esp, t.dataDir, state);
    await removeKernelFiles(t, report.dropped);
  }
  const named = new Set([state.kernel.release, state.previousKernel?.release, t.runningKernel]);
  for (const release of await kernelsOnStick(t)) {
    if (named.has(release)) continue;
    await removeKernelFiles(t, release);
    report.orphans.push(release);
  }
  return report;
}

export interface RemovalReport {
  /** The previous kernel, dropped with its files because its package is gone. */
  dropped?: string;
  /** Kernels whose package is gone but whose files stay: the default one, the running one. */
  kept: string[];
}

/** What the package hooks tell the user about a removal, a line each. */
export function removalLines(r: RemovalReport): string[] {
  return [
    ...(r.dropped ? [`kernel ${r.dropped}: its package is gone, and so are its files on the stick and its menu entry`] : []),
    ...r.kept.map((k) => `kernel ${k}: its package is gone; its files stay on the stick, which boots it (now or by default)`),
  ];
}

/**
 * After a package run: a kernel whose package was removed leaves the stick
 * too, unless the stick needs it. Only two kernels have files there (the
 * default and the previous one; confirmKernel removes any other). The
 * previous one goes with its menu entry, unless it runs now; the default
 * one stays, with a warning, since the menu has nothing else to boot.
 * `installed` says whether a release's package is still installed.
 */
export async function forgetRemovedKernels(t: SystemTarget, installed: (release: string) => Promise<boolean>): Promise<RemovalReport> {
  let state = await readBootState(t.esp);
  const report: RemovalReport = { kept: [] };
  const prev = state.previousKernel?.release;
  if (prev && !(await installed(prev))) {
    if (prev === t.runningKernel) report.kept.push(prev);
    else {
      const { previousKernel: _dropped, ...rest } = state;
      state = rest;
      await writeBootState(t.esp, t.dataDir, state);
      await removeKernelFiles(t, prev);
      report.dropped = prev;
    }
  }
  if (!(await installed(state.kernel.release))) {
    report.kept.push(state.kernel.release);
    log.warn({ release: state.kernel.release }, 'the package of the kernel the stick boots by default was removed: its files stay until another kernel is installed');
  }
  return report;
}

/** Releases with any file on the stick: a kernel or initramfs on the ESP, a modules image. */
export async function kernelsOnStick(t: SystemTarget): Promise<string[]> {
  const releases = new Set<string>();
  for (const name of await t.esp.list()) {
    const m = /^(?:vmlinuz|initramfs)-(.+)$/i.exec(name);
    if (m && !m[1]!.endsWith('.cairn-new')) releases.add(m[1]!);
  }
  for (const name of await readdir(t.dataDir)) {
    const release = modulesImageRelease(name);
    if (release) releases.add(release);
  }
  return [...releases].sort();
}

async function removeKernelFiles(t: SystemTarget, release: string): Promise<void> {
  log.info({ release }, 'removing a kernel no menu entry boots');
  await t.esp.remove(ESP_PATHS.kernel(release));
  await t.esp.remove(ESP_PATHS.initrd(release));
  const image = join(t.dataDir, modulesImage(release));
  if (existsSync(image)) await unlinkDurably(image);
  await rm(`${image}.tmp`, { force: true });
}

async function requireEspSpace(t: SystemTarget, bytes: number): Promise<void> {
  const free = await t.esp.freeBytes();
  // Room for the files plus a menu rewrite.
  const needed = bytes + (1 << 20);
  if (free < needed) {
    throw new PartitionFullError(
      `the ESP (${t.esp.device}) has ${formatBytes(free)} free; the kernel and its initramfs need ${formatBytes(needed)}`,
      'nothing was changed; boot the newest kernel once so the previous one is removed, then try again',
    );
  }
}
