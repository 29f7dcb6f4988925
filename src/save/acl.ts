import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { STATE } from '../names.js';
import type { Walk } from './tree.js';
import { dumpXattrs, dumpXattrsOf, formatXattrDump, parseXattrDump, type XattrMap } from './xattrs.js';

/**
 * POSIX ACLs live in system.posix_acl_access (and _default on directories),
 * which squashfs cannot store: mksquashfs drops every system.* xattr. Without
 * them a deny entry (user:1000:---) would vanish and a file's group bits,
 * which hold the ACL's mask, would grant its owning group what the mask
 * allowed the named entries. So a save records them in a file of its own at
 * the image's root (STATE.aclDump), in the format `getfattr --dump -e hex`
 * writes and `setfattr --restore` reads; the boot restores them after
 * unsquashfs and removes the file (initramfs/lib/acl.sh). docs/state-format.md
 * describes the file.
 */

/** Per entry (latin1 relative path, "" for the root): xattr name -> value as 0x-hex. */
export type Acls = XattrMap;

const ACL_XATTRS = '^system\\.posix_acl_(access|default)$';

/**
 * The ACLs of every entry below `root`, read by getfattr in one pass from
 * inside it (xattrs.ts dumpXattrs).
 */
export function readAcls(root: string): Promise<Acls> {
  return dumpXattrs(root, ACL_XATTRS);
}

/** readAcls of the entries RELS name only, each in the map (empty when it has none). */
export function readAclsOf(root: string, rels: readonly string[]): Promise<Acls> {
  return dumpXattrsOf(root, rels, ACL_XATTRS);
}

/** The ACLs a state or delta records (STATE.aclDump at its root), or undefined when it records none. */
export async function recordedAcls(root: string): Promise<Acls | undefined> {
  const data = await readFile(join(root, STATE.aclDump)).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  return data && parseXattrDump(data);
}

/** readAcls of the entries a walk lists, or of the whole tree (`scoped` false). */
function aclsOf(root: string, walk: Walk, scoped: boolean): Promise<Acls> {
  return scoped ? dumpXattrsOf(root, [...walk.entries.keys()], ACL_XATTRS) : readAcls(root);
}

/**
 * Records in FILE the ACLs of the entries of the upper layer the save keeps
 * (SAVED, its walk), and returns the mksquashfs pseudo definition that puts
 * FILE at the image's root: "l" refers to it (contents, mode and owner) with
 * no shell command.
 */
export async function aclPseudoFile(upperDir: string, file: string, saved: Walk, scoped = false): Promise<string> {
  const acls = await aclsOf(upperDir, saved, scoped);
  for (const rel of acls.keys()) if (rel === STATE.aclDump || !saved.entries.has(rel)) acls.delete(rel);
  await writeFile(file, formatXattrDump(acls), { mode: 0o600 });
  return `${STATE.aclDump} l ${file.replace(/[^A-Za-z0-9/._-]/g, '\\$&')}`;
}

export interface AclDifference {
  rel: string;
  expected: string;
  actual: string;
}

/**
 * The ACLs the image records against the upper layer's. Every entry the save
 * keeps (`saved`) has the same ACL in the record, and the record names only
 * entries the image holds (`inImage`): the boot sets them in the unpacked
 * tree, where a path that is not the image's own (a directory swapped for a
 * symbolic link while the save ran) could lead elsewhere.
 */
export function diffAcls(
  upper: Acls,
  recorded: Acls,
  where: { saved: (rel: string) => boolean; inImage: (rel: string) => boolean },
): AclDifference[] {
  const raw = (m?: Map<string, string>) => [...(m ?? [])].sort().map(([k, v]) => `${k}=${v}`).join(' ');
  const out: AclDifference[] = [];
  for (const rel of new Set([...upper.keys(), ...recorded.keys()])) {
    if (recorded.has(rel) && !where.inImage(rel)) {
      out.push({ rel, expected: '(none: the image does not hold it)', actual: describeAcls(recorded.get(rel)) });
    } else if ((where.saved(rel) || where.inImage(rel)) && raw(upper.get(rel)) !== raw(recorded.get(rel))) {
      out.push({ rel, expected: describeAcls(upper.get(rel)), actual: describeAcls(recorded.get(rel)) });
    }
  }
  return out;
}

/**
 * Verification: the ACL record in the mounted image (its walk `image`)
 * against the upper layer's ACLs (its walk `upper`, as saved). An image
 * without a record records none.
 */
export async function compareImageAcls(upperRoot: string, imageRoot: string, upper: Walk, image: Walk, scoped = false): Promise<AclDifference[]> {
  const recorded = readFile(join(imageRoot, STATE.aclDump)).then(parseXattrDump, (e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return new Map() as Acls;
    throw e;
  });
  const [live, record] = await Promise.all([aclsOf(upperRoot, upper, scoped), recorded]);
  return diffAcls(live, record, { saved: (rel) => upper.entries.has(rel), inImage: (rel) => image.entries.has(rel) });
}

const TAGS: Record<number, string> = { 1: 'user:', 2: 'user:', 4: 'group:', 8: 'group:', 0x10: 'mask:', 0x20: 'other:' };

/** An ACL xattr value as getfacl spells it (user::rw-,user:1000:---,...), or the hex when it is not one. */
export function aclText(hex: string): string {
  const b = Buffer.from(hex.replace(/^0x/, ''), 'hex');
  if (b.length < 4 || (b.length - 4) % 8 !== 0 || b.readUInt32LE(0) !== 2) return hex;
  const entries: string[] = [];
  for (let at = 4; at < b.length; at += 8) {
    const tag = b.readUInt16LE(at);
    const perm = b.readUInt16LE(at + 2);
    if (!TAGS[tag]) return hex;
    const who = tag === 2 || tag === 8 ? String(b.readUInt32LE(at + 4)) : '';
    entries.push(`${TAGS[tag]}${who}:${perm & 4 ? 'r' : '-'}${perm & 2 ? 'w' : '-'}${perm & 1 ? 'x' : '-'}`);
  }
  return entries.join(',');
}

function describeAcls(attrs?: Map<string, string>): string {
  if (!attrs?.size) return '(none)';
  return [...attrs]
    .sort()
    .map(([k, v]) => `${k.replace('system.posix_acl_', '')} ${aclText(v)}`)
    .join('; ');
}
