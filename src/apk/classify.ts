import { UsageError } from '../lib/errors.js';
import { escapeRegExp } from '../lib/format.js';
import type { TarEntry } from './tar.js';

/**
 * Which packages the wrapper must not let apk install as they are: they
 * write where the RAM upper layer must not (DESIGN.md "Package wrapper").
 * The default rules live here, in one place; a config file may replace them.
 */

export type SpecialClass = 'kernel' | 'firmware' | 'grub' | 'mkinitfs';

export interface ClassRule {
  class: SpecialClass;
  /** Globs (`*` for any run of characters) a package name must match one of. */
  include: readonly string[];
  /** Globs that take a name back out. */
  exclude?: readonly string[];
}

/**
 * First matching rule wins. Kernels are Alpine's `linux-<flavor>` packages
 * (linux-lts, linux-virt, linux-edge, linux-rpi...: aports main/linux-lts
 * APKBUILD `_package` installs /boot and /lib/modules/<kver>); the rest of
 * the linux-* namespace ships no modules: firmware (its own class), headers,
 * tools, PAM, and each flavor's -dev (headers, plus a /lib/modules/<kver>/build
 * symlink), -doc and -dbg.
 */
export const DEFAULT_CLASS_RULES: readonly ClassRule[] = [
  { class: 'firmware', include: ['linux-firmware', 'linux-firmware-*'] },
  {
    class: 'kernel',
    include: ['linux-*'],
    exclude: [
      'linux-firmware*',
      'linux-headers',
      'linux-tools',
      'linux-tools-*',
      'linux-pam',
      'linux-pam-*',
      'linux-timemachine',
      'linux-*-dev',
      'linux-*-doc',
      'linux-*-dbg',
      'linux-*-src',
    ],
  },
  { class: 'grub', include: ['grub', 'grub-*'], exclude: ['grub-doc'] },
  { class: 'mkinitfs', include: ['mkinitfs'] },
];

/** The special class of a package name (no `@tag`), or undefined for an ordinary package. */
export function classify(pkgName: string, rules: readonly ClassRule[] = DEFAULT_CLASS_RULES): SpecialClass | undefined {
  for (const rule of rules) {
    if (!rule.include.some((g) => globMatch(g, pkgName))) continue;
    if (rule.exclude?.some((g) => globMatch(g, pkgName))) continue;
    return rule.class;
  }
  return undefined;
}

/**
 * A rule from one config value: globs separated by spaces, `!` before a glob
 * to exclude it: `linux-* !linux-firmware* !linux-*-dev`.
 */
export function parseClassRule(cls: SpecialClass, value: string): ClassRule {
  const include: string[] = [];
  const exclude: string[] = [];
  for (const word of value.split(/\s+/).filter(Boolean)) {
    const glob = word.startsWith('!') ? word.slice(1) : word;
    if (!/^[a-z0-9*][a-z0-9._+*-]*$/i.test(glob)) throw new UsageError(`"${word}" is not a package name glob`);
    (word.startsWith('!') ? exclude : include).push(glob);
  }
  return { class: cls, include, exclude };
}

export function globMatch(glob: string, name: string): boolean {
  const re = new RegExp(`^${glob.split('*').map(escapeRegExp).join('.*')}$`);
  return re.test(name);
}

/**
 * The kernel releases a package ships modules for: the `<kver>` of every
 * `lib/modules/<kver>/` holding a `*.ko*` file (or modules.dep, written by
 * depmod in a package's trigger). A name rule says a package may be a
 * kernel; this says it is one.
 */
export function kernelReleasesIn(entries: readonly Pick<TarEntry, 'name' | 'type'>[]): string[] {
  const releases = new Set<string>();
  for (const e of entries) {
    if (e.type !== 'file') continue;
    const m = /^(?:usr\/)?lib\/modules\/([^/]+)\/(.+)$/.exec(e.name);
    if (m && (/\.ko(\.[a-z0-9]+)?$/.test(m[2]!) || m[2] === 'modules.dep')) releases.add(m[1]!);
  }
  return [...releases].sort();
}
