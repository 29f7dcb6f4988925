import { createPrivateKey, createPublicKey, sign, verify, type KeyLike, type KeyObject } from 'node:crypto';
import { UsageError } from '../lib/errors.js';
import { gzipMember } from './gzip.js';
import { encodeTar } from './tar.js';

/**
 * Package and index signatures, as abuild-sign makes them and apk-tools 2.14
 * checks them.
 *
 * - abuild-sign.in do_sign: `openssl dgst -sha1|-sha256 -sign KEY` over the
 *   whole gzip file being signed (control.tar.gz, or APKINDEX.tar.gz), the
 *   result stored as `.SIGN.<type>.<pubkey file name>` in a tar that is cut
 *   (`abuild-tar --cut`), gzipped and put in front of the signed file.
 * - apk-tools src/package.c apk_sign_ctx_process_file: the entry name picks
 *   the digest (RSA512 -> sha512, RSA256 -> sha256, RSA -> sha1; the text
 *   after the type and a dot is the key's file name in /etc/apk/keys); the
 *   first signature whose key is there and loads is the one checked, with
 *   EVP_VerifyFinal, i.e. PKCS#1 v1.5 (apk_sign_ctx_mpart_cb).
 */

export type SignatureType = 'RSA' | 'RSA256' | 'RSA512';

const DIGESTS: Record<SignatureType, string> = { RSA: 'sha1', RSA256: 'sha256', RSA512: 'sha512' };

/** apk-tools' table order; "RSA" last so it is not mistaken for a prefix of the others. */
const TYPES_IN_APK_ORDER: readonly SignatureType[] = ['RSA512', 'RSA256', 'RSA'];

export const SIGN_PREFIX = '.SIGN.';

/** The entry name for a signature: `.SIGN.RSA256.cairn-local.rsa.pub`. */
export function signatureEntryName(type: SignatureType, keyName: string): string {
  checkKeyName(keyName);
  return `${SIGN_PREFIX}${type}.${keyName}`;
}

/**
 * The type and key name of a `.SIGN.*` entry, or undefined for a type apk
 * would not check with an RSA key (DSA, unknown). Key names that could leave
 * the keys directory are refused.
 */
export function parseSignatureEntryName(name: string): { type: SignatureType; keyName: string } | undefined {
  if (!name.startsWith(SIGN_PREFIX)) return undefined;
  const rest = name.slice(SIGN_PREFIX.length);
  for (const type of TYPES_IN_APK_ORDER) {
    if (rest.startsWith(`${type}.`)) {
      const keyName = rest.slice(type.length + 1);
      return isPlainKeyName(keyName) ? { type, keyName } : undefined;
    }
  }
  return undefined;
}

export function signBytes(data: Buffer, privateKey: KeyLike, type: SignatureType): Buffer {
  const key = typeof privateKey === 'string' || Buffer.isBuffer(privateKey) ? createPrivateKey(privateKey) : privateKey;
  if (key.asymmetricKeyType !== 'rsa') throw new UsageError(`apk signatures need an RSA key, not ${key.asymmetricKeyType}`);
  return sign(DIGESTS[type], data, key);
}

export function verifyBytes(data: Buffer, signature: Buffer, publicKey: KeyObject, type: SignatureType): boolean {
  try {
    return verify(DIGESTS[type], data, publicKey, signature);
  } catch {
    return false;
  }
}

export interface SignOptions {
  privateKey: KeyLike;
  /** The public key's file name as it sits in /etc/apk/keys. */
  keyName: string;
  type: SignatureType;
  /** mtime of the signature entry (abuild uses SOURCE_DATE_EPOCH). */
  mtime: number;
}

/** The gzipped, cut signature tar over `signed` (what abuild-sign puts in front of it). */
export function signatureMember(signed: Buffer, options: SignOptions): Buffer {
  const signature = signBytes(signed, options.privateKey, options.type);
  const tar = encodeTar(
    [
      {
        name: signatureEntryName(options.type, options.keyName),
        type: 'file',
        mode: 0o644,
        uid: 0,
        gid: 0,
        // abuild-sign: --owner=0 --group=0 --numeric-owner, so no names.
        uname: '',
        gname: '',
        mtime: options.mtime,
        content: signature,
      },
    ],
    { cut: true, checksums: false },
  );
  return gzipMember(tar);
}

/** abuild-sign on any gzip file (an APKINDEX.tar.gz): the signature member, then the file. */
export function prependSignature(gzipFile: Buffer, options: SignOptions): Buffer {
  return Buffer.concat([signatureMember(gzipFile, options), gzipFile]);
}

/** A PEM public key from its text, or undefined when it does not load (apk then ignores the key). */
export function loadPublicKey(pem: Buffer | string): KeyObject | undefined {
  try {
    const key = createPublicKey(pem);
    return key.asymmetricKeyType === 'rsa' ? key : undefined;
  } catch {
    return undefined;
  }
}

function isPlainKeyName(name: string): boolean {
  return name.length > 0 && name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0');
}

function checkKeyName(name: string): void {
  if (!isPlainKeyName(name)) throw new UsageError(`"${name}" is not a key file name (as in /etc/apk/keys)`);
}
