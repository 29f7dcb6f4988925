import type { KeyLike } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipMember, splitGzipMembers } from './gzip.js';
import { parsePkgInfo } from './pkginfo.js';
import { loadPublicKey, parseSignatureEntryName, prependSignature, verifyBytes, type SignatureType } from './sign.js';
import { decodeTar, encodeTar } from './tar.js';

/**
 * A local repository of repacked packages, as `apk index` and abuild-sign
 * make one (apk-tools 2.14 app_index.c, package.c apk_pkg_write_index_header):
 *
 *   <dir>/<arch>/<name>-<version>.apk
 *   <dir>/<arch>/APKINDEX.tar.gz   signature member + gzip(tar: DESCRIPTION, APKINDEX)
 *
 * apk reads it with the signature checked against its keys directory, and
 * each package it installs from it must have the identity (`C:`) the index
 * gives, so a repacked package is only ever installed as signed.
 *
 * apk looks for a package's file under the directory of the architecture its
 * index entry names (database.c apk_repo_format_real_url: `<repo>/<A:>/<file>`),
 * so a `noarch` package (all of linux-firmware) listed as `A:noarch` is looked
 * for in `<dir>/noarch/` and "not found". The index names the repository's
 * architecture for every package instead, as `apk index --rewrite-arch`
 * does for abuild's repositories (and so for Alpine's own indexes, where
 * noarch packages are `A:x86_64`).
 */

export interface RepoPackage {
  /** The package file's bytes. */
  bytes: Buffer;
  /** Its .PKGINFO text (datahash included). */
  pkginfo: string;
  /** `Q1` + base64(sha1(control member)). */
  identity: string;
}

export interface LocalRepoOptions {
  dir: string;
  /** apk's database architecture (/etc/apk/arch): the directory apk looks in. */
  arch: string;
  packages: readonly RepoPackage[];
  signingKey: KeyLike;
  keyName: string;
  signatureType?: SignatureType;
  description?: string;
  /** mtime of the index entries. */
  mtime?: number;
}

export interface LocalRepo {
  dir: string;
  indexPath: string;
  files: string[];
}

export async function writeLocalRepo(o: LocalRepoOptions): Promise<LocalRepo> {
  const archDir = join(o.dir, o.arch);
  await mkdir(archDir, { recursive: true });
  const files: string[] = [];
  for (const p of o.packages) {
    const info = parsePkgInfo(p.pkginfo);
    const file = join(archDir, `${info.pkgname}-${info.pkgver}.apk`);
    await writeFile(file, p.bytes);
    files.push(file);
  }
  const indexPath = join(archDir, 'APKINDEX.tar.gz');
  await writeFile(indexPath, apkIndex(o));
  return { dir: o.dir, indexPath, files };
}

/** The signed APKINDEX.tar.gz for the packages of one architecture's directory. */
export function apkIndex(o: Omit<LocalRepoOptions, 'dir'>): Buffer {
  const mtime = o.mtime ?? 0;
  const text = o.packages.map((p) => indexEntry(p, o.arch)).join('');
  const entry = (name: string, content: Buffer) => ({
    name,
    type: 'file' as const,
    mode: 0o644,
    uid: 0,
    gid: 0,
    uname: 'root',
    gname: 'root',
    mtime,
    content,
  });
  const tar = encodeTar(
    [entry('DESCRIPTION', Buffer.from(o.description ?? 'cairn local repository')), entry('APKINDEX', Buffer.from(text, 'utf8'))],
    { cut: false, checksums: false },
  );
  return prependSignature(gzipMember(tar), {
    privateKey: o.signingKey,
    keyName: o.keyName,
    type: o.signatureType ?? 'RSA256',
    mtime,
  });
}

/**
 * One package's index entry, fields in apk's order, ending in a blank line.
 * `A:` is `repoArch`, the directory the file is in (`--rewrite-arch`).
 */
export function indexEntry(p: RepoPackage, repoArch: string): string {
  const info = parsePkgInfo(p.pkginfo);
  const first = (key: string) => info.fields.find((f) => f.key === key)?.value;
  const lines = [`C:${p.identity}`, `P:${info.pkgname}`, `V:${info.pkgver}`, `A:${repoArch}`];
  lines.push(`S:${p.bytes.length}`, `I:${info.size ?? 0}`, `T:${first('pkgdesc') ?? ''}`, `U:${first('url') ?? ''}`, `L:${first('license') ?? ''}`);
  if (info.origin) lines.push(`o:${info.origin}`);
  const maintainer = first('maintainer');
  if (maintainer) lines.push(`m:${maintainer}`);
  if (info.builddate) lines.push(`t:${info.builddate}`);
  const commit = first('commit');
  if (commit) lines.push(`c:${commit}`);
  const priority = first('provider_priority');
  if (priority && priority !== '0') lines.push(`k:${priority}`);
  if (info.depends.length) lines.push(`D:${info.depends.join(' ')}`);
  if (info.provides.length) lines.push(`p:${info.provides.join(' ')}`);
  if (info.installIf.length) lines.push(`i:${info.installIf.join(' ')}`);
  return `${lines.join('\n')}\n\n`;
}

/**
 * Whether apk would trust an APKINDEX.tar.gz: its signature member names a
 * key in `keysDir` and the rest of the file verifies against it. Returns
 * the key's name, or undefined.
 */
export async function trustedIndexKey(index: Buffer, keysDir: string): Promise<string | undefined> {
  const members = splitGzipMembers(index);
  if (members.length < 2) return undefined;
  const sig = decodeTar(members[0]!.inflated).entries[0];
  const parsed = sig && parseSignatureEntryName(sig.name);
  if (!parsed || !sig.content) return undefined;
  const keyFile = join(keysDir, parsed.keyName);
  const key = existsSync(keyFile) ? loadPublicKey(await readFile(keyFile)) : undefined;
  return key && verifyBytes(index.subarray(members[1]!.start), sig.content, key, parsed.type) ? parsed.keyName : undefined;
}
