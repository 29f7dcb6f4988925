import { createHash } from 'node:crypto';
import { ApkFormatError } from './errors.js';
import { GzipError, splitGzipMembers, type GzipMember } from './gzip.js';
import { parsePkgInfo, type PkgInfo } from './pkginfo.js';
import { parseSignatureEntryName, SIGN_PREFIX, type SignatureType } from './sign.js';
import { decodeTar, TarError, type ReadTarEntry } from './tar.js';

/**
 * Reads an apk v2 package into its parts, checking its shape but not its
 * signature (verify.ts does that). The shape is abuild's (abuild.in
 * create_apks, abuild-sign.in):
 *
 *   [signature member]...  gzip(cut tar of `.SIGN.<type>.<key>` entries)
 *   control member         gzip(cut tar of .PKGINFO and the scripts)
 *   data member(s)         gzip(tar of the files, each with APK-TOOLS.checksum.SHA1)
 *
 * Where apk-tools 2.14 draws the lines (src/package.c apk_sign_ctx_mpart_cb,
 * apk_sign_ctx_process_file): members are signature members until the first
 * entry that is not `.SIGN.*`; the member holding it is the control member;
 * everything after it is data (datahash is the sha256 of all of it, and a
 * second data member only earns a warning there).
 */

export interface ApkSignature {
  /** The entry's name: `.SIGN.RSA256.<keyName>`. */
  entryName: string;
  /** undefined for a signature type apk would not check with an RSA key (DSA...). */
  type?: SignatureType;
  keyName?: string;
  signature: Buffer;
}

export interface ApkPackage {
  /** What the package is called in messages (a path, a URL, a package name). */
  source: string;
  bytes: Buffer;
  members: GzipMember[];
  signatureMembers: GzipMember[];
  signatures: ApkSignature[];
  control: GzipMember;
  controlEntries: ReadTarEntry[];
  pkginfoText: string;
  pkginfo: PkgInfo;
  /** The data part: every member after the control member, as one span of the file. */
  data: { start: number; end: number; compressed: Buffer; members: GzipMember[] };
  dataEntries: ReadTarEntry[];
  /** End-of-archive zero blocks after the data entries (apk reads them, abuild leaves them in). */
  dataZeroBlocks: number;
}

export function readApk(bytes: Buffer, source = 'package'): ApkPackage {
  const fail = (problem: string): never => {
    throw new ApkFormatError(source, problem);
  };
  let members: GzipMember[];
  try {
    members = splitGzipMembers(bytes);
  } catch (e) {
    if (e instanceof GzipError) return fail(e.message);
    throw e;
  }
  if (members.length === 0) fail('the file is empty');

  const tarOf = (m: GzipMember, what: string) => {
    try {
      return decodeTar(m.inflated);
    } catch (e) {
      if (e instanceof TarError) return fail(`${what} (bytes ${m.start}-${m.end}): ${e.message}`);
      throw e;
    }
  };

  const signatureMembers: GzipMember[] = [];
  const signatures: ApkSignature[] = [];
  let index = 0;
  let control: { member: GzipMember; entries: ReadTarEntry[] } | undefined;
  for (; index < members.length; index++) {
    const member = members[index]!;
    const tar = tarOf(member, `gzip member ${index + 1}`);
    if (tar.entries.length === 0) fail(`gzip member ${index + 1} holds no entries`);
    const signs = tar.entries.filter((e) => e.name.startsWith(SIGN_PREFIX));
    if (signs.length === tar.entries.length) {
      // A cut tar: apk reads the next member's headers as the same archive.
      if (tar.zeroBlocks > 0) fail(`signature member ${index + 1} ends with end-of-archive blocks (abuild-sign cuts them)`);
      for (const e of signs) {
        if (e.type !== 'file') fail(`${e.name} is not a regular file`);
        const parsed = parseSignatureEntryName(e.name);
        signatures.push({ entryName: e.name, type: parsed?.type, keyName: parsed?.keyName, signature: e.content! });
      }
      signatureMembers.push(member);
      continue;
    }
    if (signs.length > 0) fail(`gzip member ${index + 1} mixes signatures with other entries`);
    control = { member, entries: tar.entries };
    if (tar.zeroBlocks > 0) fail('the control member ends with end-of-archive blocks (abuild cuts them)');
    index++;
    break;
  }
  if (!control) return fail('there is no control member after the signatures');

  for (const e of control.entries) {
    // apk: a name that does not start with '.', or holds a '/', starts the data part.
    if (!e.name.startsWith('.') || e.name.includes('/')) fail(`"${e.name}" is in the control member, not in the data`);
    if (e.type !== 'file') fail(`control entry ${e.name} is not a regular file`);
  }
  const pkginfoEntry = control.entries.find((e) => e.name === '.PKGINFO');
  if (!pkginfoEntry) fail('the control member has no .PKGINFO');
  const pkginfoText = pkginfoEntry!.content!.toString('utf8');
  const pkginfo = parsePkgInfo(pkginfoText);
  if (!pkginfo.pkgname || !pkginfo.pkgver) fail('.PKGINFO names no pkgname or pkgver');
  if (pkginfo.datahash !== undefined && !/^[0-9a-f]{64}$/.test(pkginfo.datahash)) {
    fail(`.PKGINFO datahash "${pkginfo.datahash}" is not a sha256`);
  }

  const dataMembers = members.slice(index);
  if (dataMembers.length === 0) fail('there is no data member');
  const dataStart = dataMembers[0]!.start;
  const dataEnd = dataMembers.at(-1)!.end;
  let dataTar;
  try {
    dataTar = decodeTar(Buffer.concat(dataMembers.map((m) => m.inflated)));
  } catch (e) {
    if (e instanceof TarError) return fail(`data member: ${e.message}`);
    throw e;
  }

  return {
    source,
    bytes,
    members,
    signatureMembers,
    signatures,
    control: control.member,
    controlEntries: control.entries,
    pkginfoText,
    pkginfo,
    data: { start: dataStart, end: dataEnd, compressed: bytes.subarray(dataStart, dataEnd), members: dataMembers },
    dataEntries: dataTar.entries,
    dataZeroBlocks: dataTar.zeroBlocks,
  };
}

/** sha256 of the data member's compressed bytes, lower-case hex: what `datahash` must say. */
export function dataHashOf(pkg: Pick<ApkPackage, 'data'>): string {
  return createHash('sha256').update(pkg.data.compressed).digest('hex');
}

/**
 * The package's identity as apk records it (APKINDEX and installed db `C:`):
 * `Q1` + base64 of the sha1 of the control member's compressed bytes, for a
 * package with a datahash (package.c apk_sign_ctx_mpart_cb's idctx,
 * blob.c apk_blob_push_csum).
 */
export function packageIdentity(controlMember: Buffer): string {
  return `Q1${createHash('sha1').update(controlMember).digest('base64')}`;
}
