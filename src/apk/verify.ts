import type { KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ApkBadSignatureError, ApkDatahashError, ApkFormatError, ApkUnsignedError, ApkUntrustedError } from './errors.js';
import { dataHashOf, readApk, type ApkPackage } from './read.js';
import { loadPublicKey, verifyBytes, type SignatureType } from './sign.js';

/**
 * Checks a package as apk-tools 2.14 and 3 do before they install one
 * (2.14 src/package.c, 3.0 src/extract_v2.c: apk_sign_ctx_process_file,
 * apk_sign_ctx_mpart_cb):
 *
 * - the first `.SIGN.*` entry whose key file is in the trusted directory and
 *   loads is the one checked; the others are not looked at;
 * - the signature covers the control member's compressed bytes, and the
 *   data members' compressed bytes must hash (sha256) to the datahash in the
 *   signed .PKGINFO;
 * - a package without a datahash (abuild's create_apks writes one in every
 *   package) is refused: apk 2.14 still took one signed over control and
 *   data, apk 3 refuses it in every applet ("v2 package format error": its
 *   apk_extract_v2_entry takes the data files for an index's), and cairn
 *   never repacks what the apk of a newer Alpine would not install
 *   (checked with apk-tools 3.0.6).
 *
 * apk's answers and cairn's: no signature or no trusted key is apk's
 * "UNTRUSTED signature" (ApkUnsignedError / ApkUntrustedError here), a
 * failing signature is "BAD signature" (ApkBadSignatureError), a datahash
 * mismatch is apk 2.14's EKEYREJECTED and apk 3's "v2 package integrity
 * error" (ApkDatahashError), no datahash apk 3's "v2 package format error"
 * (ApkFormatError).
 */

export interface VerifiedApk {
  pkg: ApkPackage;
  keyName: string;
  signatureType: SignatureType;
  /** What the signature covers: the control member, which holds the datahash of the data. */
  covers: 'control';
}

/** Looks up a trusted public key by its file name; undefined when there is none or it does not load. */
export type TrustedKeys = (keyName: string) => Promise<KeyObject | undefined> | KeyObject | undefined;

/** Trusted keys as apk finds them: a file of that exact name in the directory (/etc/apk/keys). */
export function keysInDirectory(dir: string): TrustedKeys {
  return keysInDirectories([dir]);
}

/**
 * Trusted keys from several directories, as apk-tools 3 reads /etc/apk/keys
 * then /lib/apk/keys (context.c apk_ctx_get_trust, io.c
 * apk_dir_foreach_config_file): the first directory holding a file of the
 * name decides, and a file there that does not load hides the others.
 */
export function keysInDirectories(dirs: readonly string[]): TrustedKeys {
  return async (keyName) => {
    for (const dir of dirs) {
      try {
        return loadPublicKey(await readFile(join(dir, keyName)));
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'EISDIR' || code === 'ENOTDIR') continue;
        throw e;
      }
    }
    return undefined;
  };
}

export interface VerifyApkOptions {
  /** The trusted keys' directory, or directories in apk's order (see keysInDirectories). */
  trustedKeysDir: string | readonly string[];
  /** What to call the package in errors. */
  source?: string;
}

/** Reads and verifies a package against the keys in a directory; throws unless it would pass apk's checks. */
export async function verifyApk(bytes: Buffer, options: VerifyApkOptions): Promise<VerifiedApk> {
  const pkg = readApk(bytes, options.source);
  const dirs = typeof options.trustedKeysDir === 'string' ? [options.trustedKeysDir] : options.trustedKeysDir;
  return verifyReadApk(pkg, keysInDirectories(dirs), dirs.join(' or '));
}

export async function verifyReadApk(pkg: ApkPackage, trusted: TrustedKeys, keysLabel: string): Promise<VerifiedApk> {
  if (pkg.signatures.length === 0) throw new ApkUnsignedError(pkg.source);
  let chosen: { key: KeyObject; keyName: string; type: SignatureType; signature: Buffer } | undefined;
  for (const s of pkg.signatures) {
    if (!s.type || !s.keyName) continue;
    const key = await trusted(s.keyName);
    if (key) {
      chosen = { key, keyName: s.keyName, type: s.type, signature: s.signature };
      break;
    }
  }
  if (!chosen) {
    throw new ApkUntrustedError(
      pkg.source,
      pkg.signatures.map((s) => s.keyName ?? s.entryName),
      keysLabel,
    );
  }

  const datahash = pkg.pkginfo.datahash;
  if (!datahash) {
    throw new ApkFormatError(pkg.source, 'no datahash in .PKGINFO (an old-style package, which apk-tools 3 refuses)');
  }
  if (!verifyBytes(pkg.control.compressed, chosen.signature, chosen.key, chosen.type)) {
    throw new ApkBadSignatureError(pkg.source, chosen.keyName);
  }
  const actual = dataHashOf(pkg);
  if (actual !== datahash) throw new ApkDatahashError(pkg.source, datahash, actual);
  return { pkg, keyName: chosen.keyName, signatureType: chosen.type, covers: 'control' };
}

