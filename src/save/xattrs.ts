import { createHash } from 'node:crypto';
import { CommandFailedError } from '../lib/errors.js';
import { run } from '../lib/run.js';

/** The xattr namespaces squashfs stores. */
const SAVED_NAMESPACES = '^(user|trusted|security)\\.';

/** Values up to this many hex digits are kept as they are, to be shown in a difference. */
const SHOWN_HEX = 128;

/**
 * Extended attributes of every entry below `root`, keyed by the same latin1
 * relative paths as walkTree: each name with its value in hex, or, for a
 * value too long to show, its length and sha256. Node has no xattr API;
 * getfattr reads a whole tree in one process, which is also the fastest way.
 * Its output is taken a line at a time and not kept: any user may give a
 * thousand files 64 KiB of xattrs each, and the digests stay small.
 *
 * Only the namespaces squashfs can store are read: user, trusted (overlayfs
 * keeps opaque dirs and redirects there) and security. POSIX ACLs live in
 * `system.`, which squashfs cannot store: acl.ts keeps and compares them.
 */
export async function readXattrs(root: string): Promise<XattrMap> {
  return dumpXattrs(root, SAVED_NAMESPACES, shownValue);
}

/**
 * readXattrs for the entries RELS name only (a checkpoint reads those of the
 * directories that changed, and of what its delta holds).
 */
export function readXattrsOf(root: string, rels: readonly string[]): Promise<XattrMap> {
  return dumpXattrsOf(root, rels, SAVED_NAMESPACES, shownValue);
}

/** What the namespaces squashfs stores hold, and POSIX ACLs (acl.ts), in one pass. */
const SAVED_AND_ACLS = '^((user|trusted|security)\\.|system\\.posix_acl_(access|default)$)';

/**
 * readXattrsOf with the entries' POSIX ACLs among their xattrs, shown the
 * same way: one getfattr for both, where a checkpoint compares a directory
 * by both.
 */
export function readXattrsAndAclsOf(root: string, rels: readonly string[]): Promise<XattrMap> {
  return dumpXattrsOf(root, rels, SAVED_AND_ACLS, shownValue);
}

/**
 * dumpXattrs for the entries RELS name only, each in the map (empty when it
 * has none). Paths go to getfattr as arguments, which must be UTF-8 and
 * shorter than PATH_MAX: when one is not, the whole tree is read and the
 * rest dropped.
 */
export async function dumpXattrsOf(root: string, rels: readonly string[], match: string, value?: (hex: string) => string): Promise<XattrMap> {
  const out: XattrMap = new Map();
  if (rels.length === 0) return out;
  const asArg = (rel: string) => (rel === '' ? '.' : `./${Buffer.from(rel, 'latin1').toString('utf8')}`);
  const fits = rels.every((rel) => Buffer.from(asArg(rel), 'utf8').toString('latin1') === (rel === '' ? '.' : `./${rel}`) && rel.length < 4000);
  if (!fits) {
    const all = await dumpXattrs(root, match, value);
    for (const rel of rels) out.set(rel, all.get(rel) ?? new Map());
    return out;
  }
  const parser = getfattrDumpParser(value);
  for (let at = 0; at < rels.length; at += 500) {
    await run('getfattr', ['--no-dereference', '--dump', '--encoding=hex', `--match=${match}`, '--', ...rels.slice(at, at + 500).map(asArg)], {
      timeoutMs: 10 * 60_000,
      okExitCodes: [1],
      cwd: root,
      onStdoutLine: parser.line,
      lineEncoding: 'latin1',
    });
  }
  for (const rel of rels) out.set(rel, parser.entries.get(rel) ?? new Map());
  return out;
}

/** Per entry (latin1 relative path, "" for the root): xattr name -> value as getfattr's 0x-hex, or as `value` makes it. */
export type XattrMap = Map<string, Map<string, string>>;

/**
 * The xattrs matching MATCH of every entry below `root`, by one getfattr
 * pass. Run from inside the root, so getfattr's paths are relative and reach
 * as deep as a saved state goes (tree.ts longestSavedPath); only paths left
 * out of the save for their length are longer still, and their complaint is
 * dropped below. latin1: names are bytes, not always UTF-8.
 */
export async function dumpXattrs(root: string, match: string, value?: (hex: string) => string): Promise<XattrMap> {
  const parser = getfattrDumpParser(value);
  const { stderr } = await run(
    'getfattr',
    ['--recursive', '--physical', '--no-dereference', '--dump', '--encoding=hex', `--match=${match}`, '.'],
    { timeoutMs: 30 * 60_000, okExitCodes: [1], cwd: root, onStdoutLine: parser.line, lineEncoding: 'latin1' },
  );
  // A squashfs image made without any xattr has no xattr table and answers
  // "Operation not supported": that means none. A file the user removed
  // meanwhile is gone from the map, and compare.ts says so. Any other
  // complaint fails.
  const problems = stderr
    .split('\n')
    .filter((l) => l && !/(Operation not supported|File name too long|No such file or directory)$/.test(l));
  if (problems.length) throw new CommandFailedError(`getfattr ${root}`, 1, problems.slice(0, 4).join('\n'));
  return parser.entries;
}

/**
 * Reads a getfattr dump a line at a time (latin1): "# file: <name>" starts
 * an entry, "<xattr>=<value>" lines follow, blank lines part them. Names are
 * relative, "." the root.
 */
export function getfattrDumpParser(value: (hex: string) => string = (v) => v): { entries: XattrMap; line: (line: string) => void } {
  const entries: XattrMap = new Map();
  let current: Map<string, string> | undefined;
  const line = (text: string) => {
    if (text.startsWith('# file: ')) {
      const path = unescapeGetfattr(text.slice('# file: '.length));
      current = new Map();
      entries.set(path === '.' ? '' : path.startsWith('./') ? path.slice(2) : path, current);
    } else if (text && !text.startsWith('#') && current) {
      const eq = text.indexOf('=');
      if (eq < 0) current.set(text, '');
      else current.set(text.slice(0, eq), value(text.slice(eq + 1)));
    }
  };
  return { entries, line };
}

/** A getfattr hex value (0x...) as compared and shown: itself if short, else its length and digest. */
export function shownValue(hex: string): string {
  if (hex.length <= SHOWN_HEX + 2) return hex;
  const bytes = (hex.length - 2) / 2;
  return `(${bytes} bytes, sha256 ${createHash('sha256').update(hex).digest('hex')})`;
}

/** getfattr writes unprintable bytes and backslashes as \ooo octal escapes. */
function unescapeGetfattr(s: string): string {
  return s.replace(/\\([0-7]{3}|\\)/g, (_, code: string) => (code === '\\' ? '\\' : String.fromCharCode(parseInt(code, 8))));
}

/**
 * Every byte but printable ASCII, and the backslash, as \ooo: setfattr reads
 * it back whatever the bytes (a newline, a byte that is not UTF-8), and the
 * line stays one line.
 */
const escapeName = (rel: string): string =>
  rel ? rel.replace(/[^\x21-\x5b\x5d-\x7e]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`) : '.';

/** XATTRS as a dump `setfattr --restore` reads from the upper layer's root, in path order. */
export function formatXattrDump(xattrs: XattrMap): Buffer {
  const text = [...xattrs]
    .filter(([, attrs]) => attrs.size > 0)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([rel, attrs]) => `# file: ${escapeName(rel)}\n${[...attrs].sort().map(([k, v]) => `${k}=${v}\n`).join('')}\n`)
    .join('');
  return Buffer.from(text, 'latin1');
}

export function parseXattrDump(data: Buffer): XattrMap {
  const parser = getfattrDumpParser();
  for (const line of data.toString('latin1').split('\n')) parser.line(line);
  return parser.entries;
}
