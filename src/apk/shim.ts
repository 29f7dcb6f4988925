/**
 * The `apk` a cairn image puts first on PATH (/usr/local/sbin/apk): every
 * apk command a user types goes through `cairn apk`. The `--` keeps cairn's
 * own option parser away from apk's arguments (apk's -V is not cairn's).
 *
 * If cairn's runtime is gone (no cairn, or no node to run it), the real apk
 * runs with a warning, so a broken cairn never leaves a system without a
 * package manager; special packages then go where apk puts them.
 */

/** A line that marks the shim, so cairn never takes it for the real apk. */
export const SHIM_MARKER = '# cairn-apk-shim';

export const SHIM_PATH = '/usr/local/sbin/apk';
export const DEFAULT_REAL_APK = '/sbin/apk';

export interface ShimOptions {
  /** How to call cairn (default: `cairn` from PATH). */
  cairn?: string;
}

export function apkShimScript(realApk: string = DEFAULT_REAL_APK, options: ShimOptions = {}): string {
  const cairn = options.cairn ?? 'cairn';
  return `#!/bin/sh
${SHIM_MARKER}
# apk through cairn's package wrapper (cairn apk): kernels, firmware, GRUB and
# mkinitfs are repacked so that nothing of them lands in the RAM layer.
# Ordinary commands and packages go to ${realApk} unchanged.
real_apk=${quote(realApk)}
cairn=${quote(cairn)}
if command -v "$cairn" >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then
	CAIRN_REAL_APK="$real_apk" exec "$cairn" apk -- "$@"
fi
echo "apk: cairn's runtime is missing (no $cairn or no node): running $real_apk directly." >&2
echo "apk: kernels, firmware, GRUB and mkinitfs installed now go into the RAM layer, not onto the stick." >&2
exec "$real_apk" "$@"
`;
}

function quote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
