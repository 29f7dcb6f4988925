import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ensureLocalKey } from '../apk/localKey.js';
import { apkShimScript, DEFAULT_REAL_APK, SHIM_PATH } from '../apk/shim.js';
import type { PackagingOptions } from './base.js';

/**
 * Alpine's package backend on a stick (docs/packages-alpine.md): every apk
 * command goes through cairn's wrapper, whose shim comes first on PATH, and
 * the wrapper signs what it repacks with a key made for this stick: its
 * private half on the data partition, readable by root only, never in
 * the base image or a saved state; its public half trusted by the image's apk.
 */
export async function configureAlpinePackaging(root: string, o: PackagingOptions): Promise<void> {
  await mkdir(join(root, dirname(SHIM_PATH)), { recursive: true });
  await writeFile(join(root, SHIM_PATH), apkShimScript(DEFAULT_REAL_APK), { mode: 0o755 });
  // Alpine's /etc/profile already puts /usr/local/sbin first; a PATH a
  // user or another profile script changed might not.
  await mkdir(join(root, 'etc/profile.d'), { recursive: true });
  await writeFile(
    join(root, 'etc/profile.d/cairn-apk.sh'),
    `# cairn: apk goes through cairn's package wrapper (${SHIM_PATH}), so its directory comes first.\ncase ":$PATH:" in\n:${dirname(SHIM_PATH)}:*) ;;\n*) PATH="${dirname(SHIM_PATH)}:$PATH" ;;\nesac\n`,
  );
  await ensureLocalKey(o.dataDir, join(root, 'etc/apk/keys'));
  await writeFile(join(root, 'etc/apk/repositories'), `${o.repositories.join('\n')}\n`);
}
