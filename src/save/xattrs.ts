import { CommandFailedError } from '../lib/errors.js';
import { run } from '../lib/run.js';

/**
 * Extended attributes of every entry below `root`, keyed by the same latin1
 * relative paths as walkTree. Node has no xattr API; getfattr reads a whole
 * tree in one process, which is also the fastest way.
 *
 * Only the namespaces squashfs can store are read: user, trusted (overlayfs
 * keeps opaque dirs and redirects there) and security. POSIX ACLs live in
 * `system.` and are not kept by squashfs; docs/saving.md says so.
 */
export async function readXattrs(root: string): Promise<Map<string, Map<string, string>>> {
  const { stdout, stderr } = await run(
    'getfattr',
    ['--absolute-names', '--recursive', '--physical', '--no-dereference', '--dump', '--encoding=hex', '--match=^(user|trusted|security)\\.', root],
    { timeoutMs: 30 * 60_000, okExitCodes: [1] },
  );
  // A squashfs image made without any xattr has no xattr table and answers
  // "Operation not supported": that means none. Any other complaint fails.
  const problems = stderr.split('\n').filter((l) => l && !/Operation not supported$/.test(l));
  if (problems.length) throw new CommandFailedError(`getfattr ${root}`, 1, problems.slice(0, 4).join('\n'));
  const out = new Map<string, Map<string, string>>();
  const prefix = Buffer.from(root).toString('latin1');
  let current: Map<string, string> | undefined;
  for (const line of stdout.split('\n')) {
    if (line.startsWith('# file: ')) {
      const abs = unescapeGetfattr(line.slice('# file: '.length));
      const rel = abs === prefix ? '' : abs.startsWith(`${prefix}/`) ? abs.slice(prefix.length + 1) : abs;
      current = new Map();
      out.set(rel, current);
    } else if (line && current) {
      const eq = line.indexOf('=');
      if (eq < 0) current.set(line, '');
      else current.set(line.slice(0, eq), line.slice(eq + 1));
    }
  }
  return out;
}

/** getfattr writes unprintable bytes and backslashes as \ooo octal escapes. */
function unescapeGetfattr(s: string): string {
  // Names arrive as UTF-8 text; turn them into the latin1 byte form first.
  const bytes = Buffer.from(s, 'utf8').toString('latin1');
  return bytes.replace(/\\([0-7]{3}|\\)/g, (_, code: string) =>
    code === '\\' ? '\\' : String.fromCharCode(parseInt(code, 8)),
  );
}
