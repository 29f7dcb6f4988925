import type { KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ApkBadSignatureError, ApkDatahashError, ApkUnsignedError, ApkUntrustedError } from './errors.js';
import { dataHashOf, readApk, type ApkPackage } from './read.js';
import { loadPublicKey, verifyBytes, type SignatureType } from './sign.js';

/**
 * Checks a package as apk-tools 2.14 does before it installs one
 * (src/package.c apk_sign_ctx_process_file, apk_sign_ctx_mpart_cb):
 *
 * - the first `.SIGN.*` entry whose key file is in the trusted directory and
 *   loads is the one checked; the others are not looked at;
 * - with a datahash, the signature covers the control member's compressed
 *   bytes, and the data members' compressed bytes must hash (sha256) to the
 *   datahash in the signed .PKGINFO;
 * - without one (old packages), the signature covers control and data alike.
 *
 * apk's answers and cairn's: no signature or no trusted key is apk's
 * "UNTRUSTED signature" (ApkUnsignedError / ApkUntrustedError here), a
 * failing signature is "BAD signature" (ApkBadSignatureError), a datahash
 * mismatch is apk's EKEYREJECTED too (ApkDatahashError).
 */

export interface VerifiedApk {
  pkg: ApkPackage;
  keyName: string;
  signatureType: SignatureType;
  /** What the signature covers: 'control' with a datahash, 'control+data' without. */
  covers: 'control' | 'control+data';
}

/** Looks up a trusted public key by its file name; undefined when there is none or it does not load. */
export type TrustedKeys = (keyName: string) => Promise<KeyObject | undefined> | KeyObject | undefined;

/** Trusted keys as apk finds them: a file of that exact name in the directory (/etc/apk/keys). */
export function keysInDirectory(dir: string): TrustedKeys {
  return async (keyName) => {
    try {
      return loadPublicKey(await readFile(join(dir, keyName)));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'EISDIR' || code === 'ENOTDIR') return undefined;
      throw e;
    }
  };
}

export interface VerifyApkOptions {
  trustedKeysDir: string;
  /** What to call the package in errors. */
  source?: string;
}

/** Reads and verifies a package against the keys in a directory; throws unless it would pass apk's checks. */
export async function verifyApk(bytes: Buffer, options: VerifyApkOptions): Promise<VerifiedApk> {
  const pkg = readApk(bytes, options.source);
  return verifyReadApk(pkg, keysInDirectory(options.trustedKeysDir), options.trustedKeysDir);
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
  const signed = datahash ? pkg.control.compressed : pkg.bytes.subarray(pkg.control.start, pkg.data.end);
  if (!verifyBytes(signed, chosen.signature, chosen.key, chosen.type)) {
    throw new ApkBadSignatureError(pkg.source, chosen.keyName);
  }
  if (datahash) {
    const actual = dataHashOf(pkg);
    if (actual !== datahash) throw new ApkDatahashError(pkg.source, datahash, actual);
  }
  return { pkg, keyName: chosen.keyName, signatureType: chosen.type, covers: datahash ? 'control' : 'control+data' };
}

