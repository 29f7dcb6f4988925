import { CairnError } from '../lib/errors.js';

/**
 * Why an .apk was refused. Every check the package wrapper makes before it
 * repacks a package ends in one of these, never in a silent pass: a repacked
 * package is only signed by the local key after its upstream signature and
 * datahash held.
 */

/** The bytes are not an apk v2 package as abuild writes it (gzip members, cut tars, .PKGINFO). */
export class ApkFormatError extends CairnError {
  override readonly code = 'APK_FORMAT';
  constructor(readonly source: string, readonly problem: string) {
    super(`${source}: not a valid apk v2 package: ${problem}`);
  }
}

/** No `.SIGN.*` entry at all. apk refuses these without --allow-untrusted; so does cairn. */
export class ApkUnsignedError extends CairnError {
  override readonly code = 'APK_UNSIGNED';
  constructor(readonly source: string) {
    super(`${source}: the package is not signed`, {
      hint: 'cairn only repacks packages whose signature it can check against /etc/apk/keys',
    });
  }
}

/** Signed, but by no key in the trusted directory (apk: "UNTRUSTED signature"). */
export class ApkUntrustedError extends CairnError {
  override readonly code = 'APK_UNTRUSTED';
  constructor(readonly source: string, readonly keyNames: readonly string[], readonly keysDir: string) {
    super(`${source}: signed by ${keyNames.join(', ') || 'no known key type'}, none of which is trusted in ${keysDir}`, {
      hint: `put the signer's public key in ${keysDir} if you trust it`,
    });
  }
}

/** A trusted key's signature does not match the control member (apk: "BAD signature"). */
export class ApkBadSignatureError extends CairnError {
  override readonly code = 'APK_BAD_SIGNATURE';
  constructor(readonly source: string, readonly keyName: string) {
    super(`${source}: the signature by ${keyName} does not match the package: it was changed after signing`);
  }
}

/** The data member's sha256 is not the `datahash` the signed .PKGINFO promises. */
export class ApkDatahashError extends CairnError {
  override readonly code = 'APK_DATAHASH';
  constructor(readonly source: string, readonly expected: string, readonly actual: string) {
    super(`${source}: the package's files were changed after signing (datahash ${expected}, data is ${actual})`);
  }
}
