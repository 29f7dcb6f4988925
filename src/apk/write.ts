import { createHash, type KeyLike } from 'node:crypto';
import { UsageError } from '../lib/errors.js';
import { gzipMember } from './gzip.js';
import { parsePkgInfo, withDatahash } from './pkginfo.js';
import { packageIdentity } from './read.js';
import { signatureMember, type SignatureType } from './sign.js';
import { encodeTar, type TarEntry } from './tar.js';

/**
 * Writes an apk v2 package the way abuild's create_apks does:
 *
 *   1. data.tar.gz: the files in C-locale path order (`find | LC_ALL=C sort`),
 *      `tar --format=posix | abuild-tar --hash | gzip -n -9`: a whole tar,
 *      each regular file and symlink with its APK-TOOLS.checksum.SHA1;
 *   2. `datahash = sha256(data.tar.gz)` appended to .PKGINFO;
 *   3. control.tar.gz: .PKGINFO then the scripts, `abuild-tar --cut | gzip`;
 *   4. abuild-sign control.tar.gz: the signature member in front;
 *   5. `cat control.tar.gz data.tar.gz`.
 */

/** The control files apk-tools 2.14 acts on besides .PKGINFO (package.c apk_script_types). */
export const SCRIPT_NAMES = [
  '.pre-install',
  '.post-install',
  '.pre-deinstall',
  '.post-deinstall',
  '.pre-upgrade',
  '.post-upgrade',
  '.trigger',
] as const;

export interface ControlFile {
  /** One of SCRIPT_NAMES. */
  name: string;
  content: Buffer | string;
  /** abuild installs scripts with mode 0755. */
  mode?: number;
}

export interface ApkControl {
  /** .PKGINFO text; any datahash line in it is replaced by the real one. */
  pkginfo: string;
  scripts: ControlFile[];
}

export interface WriteApkOptions {
  /** .PKGINFO text; any datahash line in it is replaced by the real one. */
  pkginfo: string;
  /** The scripts, in the order they go into the control tar (abuild: install scripts, then triggers). */
  scripts?: readonly ControlFile[];
  data: readonly TarEntry[];
  signingKey: KeyLike;
  /** The public key's file name in /etc/apk/keys, e.g. `cairn-local.rsa.pub`. */
  keyName: string;
  /** Default RSA256 (sha256), which apk-tools has checked since 2.7. */
  signatureType?: SignatureType;
  /** mtime of the control and signature entries; default .PKGINFO's builddate, else 0. */
  mtime?: number;
}

export interface WrittenApk {
  bytes: Buffer;
  /** The .PKGINFO as written, datahash included. */
  pkginfo: string;
  datahash: string;
  /** The identity apk gives it (`C:` in an APKINDEX): Q1 + base64(sha1(control member)). */
  identity: string;
  signature: { start: number; end: number };
  control: { start: number; end: number };
  data: { start: number; end: number };
}

export function writeApk(options: WriteApkOptions): WrittenApk {
  const data = sortedData(options.data);
  const dataGz = gzipMember(encodeTar(data, { cut: false, checksums: true }));
  const datahash = createHash('sha256').update(dataGz).digest('hex');

  const pkginfo = withDatahash(options.pkginfo, datahash);
  const info = parsePkgInfo(pkginfo);
  if (!info.pkgname || !info.pkgver) throw new UsageError('.PKGINFO needs pkgname and pkgver');
  const mtime = options.mtime ?? info.builddate ?? 0;

  const controlGz = gzipMember(encodeTar(controlEntries(pkginfo, options.scripts ?? [], mtime), { cut: true, checksums: false }));
  const signatureGz = signatureMember(controlGz, {
    privateKey: options.signingKey,
    keyName: options.keyName,
    type: options.signatureType ?? 'RSA256',
    mtime,
  });

  const bytes = Buffer.concat([signatureGz, controlGz, dataGz]);
  const c = signatureGz.length;
  const d = c + controlGz.length;
  return {
    bytes,
    pkginfo,
    datahash,
    identity: packageIdentity(controlGz),
    signature: { start: 0, end: c },
    control: { start: c, end: d },
    data: { start: d, end: bytes.length },
  };
}

/** The `size` abuild writes: the bytes of the regular files (hard links counted once). */
export function installedSize(data: readonly TarEntry[]): number {
  return data.reduce((n, e) => n + (e.type === 'file' ? (e.content?.length ?? 0) : 0), 0);
}

function controlEntries(pkginfo: string, scripts: readonly ControlFile[], mtime: number): TarEntry[] {
  const seen = new Set<string>();
  const entries: TarEntry[] = [
    { name: '.PKGINFO', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, content: Buffer.from(pkginfo, 'utf8') },
  ];
  for (const s of scripts) {
    if (!(SCRIPT_NAMES as readonly string[]).includes(s.name)) {
      throw new UsageError(`"${s.name}" is not a control file apk knows (${SCRIPT_NAMES.join(', ')})`);
    }
    if (seen.has(s.name)) throw new UsageError(`${s.name} is given twice`);
    seen.add(s.name);
    const content = typeof s.content === 'string' ? Buffer.from(s.content, 'utf8') : s.content;
    entries.push({ name: s.name, type: 'file', mode: s.mode ?? 0o755, uid: 0, gid: 0, mtime, content });
  }
  return entries;
}

/**
 * The data entries in abuild's order, checked against what apk-tools 2.14
 * refuses or skips when it installs (database.c apk_db_install_archive_entry):
 * names that are absolute, hold `.`/`..` parts or control characters, start
 * with '.', files whose directory has no entry of its own before them, and
 * hard links to files not earlier in the package.
 */
function sortedData(entries: readonly TarEntry[]): TarEntry[] {
  const sorted = [...entries].sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
  const dirs = new Set<string>();
  const files = new Set<string>();
  const names = new Set<string>();
  for (const e of sorted) {
    const n = e.name;
    if (
      !n ||
      n.startsWith('/') ||
      n.startsWith('.') ||
      n.endsWith('/') ||
      n.split('/').some((part) => part === '' || part === '.' || part === '..') ||
      /[\u0000-\u001f\u007f]/.test(n)
    ) {
      throw new UsageError(`"${n}" is not a path apk would install`);
    }
    if (names.has(n)) throw new UsageError(`"${n}" is in the data twice`);
    names.add(n);
    const slash = n.lastIndexOf('/');
    if (e.type !== 'directory' && slash >= 0 && !dirs.has(n.slice(0, slash))) {
      throw new UsageError(`"${n}" comes without an entry for its directory "${n.slice(0, slash)}" (apk: no dirent in archive)`);
    }
    if (e.type === 'hardlink' && !files.has(e.linkTarget ?? '')) {
      throw new UsageError(`hard link "${n}" points to "${e.linkTarget}", which is not a file before it`);
    }
    if (e.type === 'directory') dirs.add(n);
    if (e.type === 'file') files.add(n);
  }
  return sorted;
}
