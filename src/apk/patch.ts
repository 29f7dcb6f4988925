import { installFirmware } from '../packages/firmware.js';
import { updateGrubBootFiles } from '../packages/grub.js';
import { forgetRemovedKernels, installKernel, kernelPayloads, type KernelInstallReport } from '../packages/kernel.js';
import type { SystemTarget } from '../packages/target.js';
import { CairnError } from '../lib/errors.js';
import type { SpecialClass } from './classify.js';
import { setPkgInfoField } from './pkginfo.js';
import type { TarEntry } from './tar.js';
import { installedSize, type ApkControl } from './write.js';

/**
 * What the wrapper does to each class of special package (DESIGN.md
 * "Package wrapper"). A patch has two halves:
 *
 * - `repack`: pure changes to the package's files and control scripts; the
 *   result is signed with the local key and installed by apk, so the package
 *   database records the package as installed, with the files it still has;
 * - `apply`: what the moved files become on the stick (a modules image and
 *   the ESP for a kernel, firmware.squashfs for firmware). It runs after
 *   every package of the transaction was fetched, verified and repacked, and
 *   before apk runs; when it fails, apk is not run.
 *
 * kernel    files under lib/modules/<release>/ and boot/ leave the package and
 *           go through installKernel (src/packages/kernel.ts); its scripts
 *           and triggers are dropped: what they do (depmod, /boot images) is
 *           installKernel's job, and they would act on files that are gone.
 * firmware  files under lib/firmware/ leave the package and go into
 *           firmware.squashfs (installFirmware); scripts kept.
 * grub      files kept (grub-install, modules under /usr/lib/grub); the
 *           trigger (update-grub, which writes /boot/grub/grub.cfg) and any
 *           script that calls update-grub, grub-mkconfig, grub-install or
 *           /etc/grub-autoinstall are dropped: cairn's menu on the ESP is
 *           rebuilt by cairn alone.
 * mkinitfs  files kept; its trigger on /usr/share/kernel/* is replaced by one
 *           that builds initramfs images with `cairn initramfs build`.
 */

export interface PatchContext {
  /** The unpacked upstream package. */
  tree: string;
  name: string;
  version: string;
}

export interface PatchResult {
  class: SpecialClass;
  /** What changed, one line each, for the user and the package's .PKGINFO comment. */
  notes: string[];
  kernels?: KernelInstallReport[];
  firmwareBytes?: number;
}

export interface SpecialPatch {
  class: SpecialClass;
  /** Whether the upstream package holds anything this patch changes. */
  applies(entries: readonly TarEntry[], control: ApkControl): boolean;
  transformData(entries: TarEntry[]): TarEntry[];
  transformControl(control: ApkControl, newData: readonly TarEntry[]): ApkControl;
  /** Kernel releases the package ships (for the mkinitfs trigger's marker). */
  kernelReleases?(entries: readonly TarEntry[]): string[];
  apply(target: SystemTarget, ctx: PatchContext): Promise<PatchResult>;
}

/** The hooks the kernel and firmware patches call; src/packages in production, fakes in unit tests. */
export interface SystemHooks {
  installKernel: typeof installKernel;
  kernelPayloads: typeof kernelPayloads;
  installFirmware: typeof installFirmware;
  updateGrubBootFiles: typeof updateGrubBootFiles;
  forgetRemovedKernels: typeof forgetRemovedKernels;
}

export const SYSTEM_HOOKS: SystemHooks = { installKernel, kernelPayloads, installFirmware, updateGrubBootFiles, forgetRemovedKernels };

const MODULES = /^(?:usr\/)?lib\/modules\/[^/]+(?:\/|$)/;
const BOOT = /^boot(?:\/|$)/;
const FIRMWARE = /^(?:usr\/)?lib\/firmware(?:\/|$)/;
const GRUB_CONFIG_WRITERS = /\b(?:update-grub|grub-mkconfig|grub-install|grub-autoinstall)\b/;

export class PatchError extends CairnError {
  override readonly code = 'APK_PATCH';
  constructor(readonly pkg: string, message: string, options?: { cause?: unknown; hint?: string }) {
    super(`${pkg}: ${message}`, options);
  }
}

export function patchFor(cls: SpecialClass, hooks: SystemHooks = SYSTEM_HOOKS, cairnCommand = 'cairn'): SpecialPatch {
  switch (cls) {
    case 'kernel':
      return kernelPatch(hooks);
    case 'firmware':
      return firmwarePatch(hooks);
    case 'grub':
      return grubPatch();
    case 'mkinitfs':
      return mkinitfsPatch(cairnCommand);
  }
}

function kernelPatch(hooks: SystemHooks): SpecialPatch {
  const moved = (e: TarEntry) => MODULES.test(e.name) || BOOT.test(e.name);
  return {
    class: 'kernel',
    applies: (entries) => entries.some(moved),
    transformData: (entries) => entries.filter((e) => !moved(e)),
    transformControl: (control, data) => ({
      pkginfo: withSize(setPkgInfoField(control.pkginfo, 'triggers', undefined), data),
      scripts: [],
    }),
    kernelReleases: (entries) => [
      ...new Set(entries.map((e) => /^(?:usr\/)?lib\/modules\/([^/]+)\//.exec(e.name)?.[1]).filter((r): r is string => !!r)),
    ],
    async apply(target, ctx) {
      const payloads = await hooks.kernelPayloads(ctx.tree);
      if (payloads.length === 0) {
        throw new PatchError(ctx.name, 'ships files under lib/modules or boot but no kernel (no lib/modules/<release>/kernel/ beside a boot/vmlinuz*)', {
          hint: `nothing was installed; if ${ctx.name} is not a kernel, leave it out of the kernel rule in /etc/cairn/cairn.conf`,
        });
      }
      const kernels: KernelInstallReport[] = [];
      for (const p of payloads) kernels.push(await hooks.installKernel(target, p));
      return {
        class: 'kernel',
        kernels,
        notes: kernels.map(
          (k) => `kernel ${k.release}: modules in ${k.modulesImage}, kernel and initramfs on the ESP, boots by default` +
            (k.previous ? ` (${k.previous} kept in the menu until it has booted)` : ''),
        ),
      };
    },
  };
}

function firmwarePatch(hooks: SystemHooks): SpecialPatch {
  const moved = (e: TarEntry) => FIRMWARE.test(e.name);
  return {
    class: 'firmware',
    applies: (entries) => entries.some(moved),
    transformData: (entries) => entries.filter((e) => !moved(e)),
    transformControl: (control, data) => ({ ...control, pkginfo: withSize(control.pkginfo, data) }),
    async apply(target, ctx) {
      const bytes = await hooks.installFirmware(target, ctx.tree);
      return { class: 'firmware', firmwareBytes: bytes, notes: ['firmware added to firmware.squashfs (mounted at /lib/firmware from the next boot)'] };
    },
  };
}

function grubPatch(): SpecialPatch {
  const dropped = (s: { name: string; content: Buffer | string }) =>
    s.name === '.trigger' || GRUB_CONFIG_WRITERS.test(s.content.toString());
  return {
    class: 'grub',
    applies: (_entries, control) => control.scripts.some(dropped) || /^triggers = /m.test(control.pkginfo),
    transformData: (entries) => entries,
    transformControl: (control) => ({
      pkginfo: setPkgInfoField(control.pkginfo, 'triggers', undefined),
      scripts: control.scripts.filter((s) => !dropped(s)),
    }),
    async apply() {
      return { class: 'grub', notes: ['GRUB scripts that write grub.cfg or run grub-install dropped: the stick keeps cairn\'s menu and boot loader'] };
    },
  };
}

function mkinitfsPatch(cairnCommand: string): SpecialPatch {
  return {
    class: 'mkinitfs',
    applies: () => true,
    transformData: (entries) => entries,
    transformControl: (control) => {
      const hasTriggers = /^triggers = /m.test(control.pkginfo);
      return {
        pkginfo: hasTriggers ? control.pkginfo : setPkgInfoField(control.pkginfo, 'triggers', '/usr/share/kernel/*'),
        scripts: [...control.scripts.filter((s) => s.name !== '.trigger'), { name: '.trigger', content: mkinitfsTrigger(cairnCommand), mode: 0o755 }],
      };
    },
    async apply() {
      return { class: 'mkinitfs', notes: ['trigger replaced: initramfs images are built by cairn initramfs build'] };
    },
  };
}

/** Where the wrapper lists the kernel releases whose initramfs it has put on the ESP in the running transaction. */
export const KERNELS_MARKER = '/run/cairn/apk-kernels';

/**
 * mkinitfs's trigger as cairn ships it. apk runs it (in the target root,
 * with PATH=/usr/sbin:/usr/bin:/sbin:/bin and nothing else in the
 * environment) with each changed /usr/share/kernel/<flavor> directory, and
 * with every one of them when mkinitfs itself is installed, upgraded or
 * reinstalled (apk-tools 2.14 fires a new trigger on all matching paths).
 * A kernel installed through cairn's wrapper already has its initramfs on
 * the ESP: the wrapper lists its release in the marker file during its run,
 * and the repack it installed ships no /boot/vmlinuz-<flavor>, so a kernel
 * put on the stick by an earlier run is told apart by that. Any other
 * kernel (apk run directly, around the wrapper: upstream's package, with its
 * image in /boot) gets its initramfs from `cairn initramfs build` where
 * mkinitfs would have put it, and a warning that the stick does not boot it
 * yet.
 */
export function mkinitfsTrigger(cairnCommand = 'cairn'): string {
  return `#!/bin/sh
# mkinitfs's trigger, replaced by cairn's package wrapper (cairn apk).
# mkinitfs would write /boot/initramfs-<flavor> into the RAM layer, which
# boots nothing: a cairn stick boots the kernel and initramfs on its ESP.
marker=${KERNELS_MARKER}
boot=/boot
cairn=${shellQuote(cairnCommand)}
command -v "$cairn" >/dev/null 2>&1 || cairn=cairn

for dir in "$@"; do
	flavor=\${dir##*/}
	# A kernel removed: cairn keeps the ESP's files until its menu drops them.
	[ -f "$dir/kernel.release" ] || continue
	release=$(cat "$dir/kernel.release")
	if [ -f "$marker" ] && grep -qxF "$release" "$marker"; then
		echo "cairn: kernel $release: modules image, kernel and initramfs are on the stick already"
		continue
	fi
	# No kernel image in /boot: the package installed is cairn's repack, put on the
	# stick by an earlier run (apk fires this trigger for every kernel when
	# mkinitfs itself changes).
	if [ ! -e "$boot/vmlinuz-$flavor" ]; then
		echo "cairn: kernel $release: installed through cairn's apk wrapper, its initramfs is on the stick"
		continue
	fi
	echo "cairn: kernel $release ($flavor) was installed around cairn's apk wrapper:" >&2
	echo "cairn: building $boot/initramfs-$flavor with cairn initramfs build; the stick does not boot it yet" >&2
	"$cairn" initramfs build --kver "$release" --modules-dir / --output "$boot/initramfs-$flavor" || {
		echo "  cairn initramfs build failed" >&2
		exit 1
	}
	echo "cairn: to boot it, run: apk fix --reinstall linux-$flavor" >&2
done
exit 0
`;
}

function withSize(pkginfo: string, data: readonly TarEntry[]): string {
  return setPkgInfoField(pkginfo, 'size', String(installedSize(data)));
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
