import type { KeyLike } from 'node:crypto';
import { readApk } from './read.js';
import type { SignatureType } from './sign.js';
import type { TarEntry } from './tar.js';
import { keysInDirectories, verifyReadApk, type VerifiedApk } from './verify.js';
import { writeApk, type ApkControl, type WrittenApk } from './write.js';

/**
 * Verify, change, re-sign: how the package wrapper turns an upstream special
 * package (kernel, firmware, GRUB, mkinitfs) into one the local system can
 * install. The upstream signature and datahash are always checked first
 * (DESIGN.md "Package wrapper": never install with signature checks off);
 * the new package is signed with the local key the image trusts.
 */

type MaybePromise<T> = T | Promise<T>;

export interface RepackOptions {
  /** The upstream package's bytes. */
  input: Buffer;
  /** What to call it in errors (its path or name). */
  source?: string;
  /** Where the keys the upstream package must be signed with live (/etc/apk/keys; apk 3: and /lib/apk/keys). */
  trustedKeysDir: string | readonly string[];
  /** The local private key. */
  signingKey: KeyLike;
  /** Its public half's file name in /etc/apk/keys. */
  keyName: string;
  signatureType?: SignatureType;
  /** Changes the files; gets them in package order, with their PAX records. */
  transformData?: (entries: TarEntry[]) => MaybePromise<TarEntry[]>;
  /** Changes .PKGINFO and the scripts; the datahash line is rewritten afterwards anyway. */
  transformControl?: (control: ApkControl) => MaybePromise<ApkControl>;
}

export interface RepackedApk extends WrittenApk {
  /** The upstream package as verified. */
  upstream: VerifiedApk;
}

export async function repackApk(options: RepackOptions): Promise<RepackedApk> {
  const pkg = readApk(options.input, options.source);
  const dirs = typeof options.trustedKeysDir === 'string' ? [options.trustedKeysDir] : options.trustedKeysDir;
  const upstream = await verifyReadApk(pkg, keysInDirectories(dirs), dirs.join(' or '));

  // Entries as plain TarEntry values: offsets belong to the old file.
  const data: TarEntry[] = pkg.dataEntries.map(({ offset: _o, end: _e, ...entry }) => entry);
  const control: ApkControl = {
    pkginfo: pkg.pkginfoText,
    scripts: pkg.controlEntries
      .filter((e) => e.name !== '.PKGINFO')
      .map((e) => ({ name: e.name, content: e.content ?? Buffer.alloc(0), mode: e.mode })),
  };

  const newData = options.transformData ? await options.transformData(data) : data;
  const newControl = options.transformControl ? await options.transformControl(control) : control;
  const written = writeApk({
    ...newControl,
    data: newData,
    signingKey: options.signingKey,
    keyName: options.keyName,
    signatureType: options.signatureType,
    mtime: pkg.controlEntries.find((e) => e.name === '.PKGINFO')?.mtime,
  });
  return { ...written, upstream };
}
