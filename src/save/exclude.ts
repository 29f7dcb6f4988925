/**
 * What a save leaves out. Patterns are relative to the upper layer's root,
 * `/`-separated, and match whole paths one component at a time: `*` and `?`
 * stay inside a component, so `tmp/*` matches what is in /tmp but keeps /tmp
 * itself (with its mode). A matched directory is left out with all it holds.
 *
 * mksquashfs applies the same patterns while it squashes (-wildcards, which
 * is fnmatch with FNM_PATHNAME | FNM_PERIOD | FNM_EXTMATCH), and the
 * verification applies them with the matcher below. The two must agree, so
 * only the syntax both read alike is accepted: `*` and `?`, which never match
 * a leading dot (hidden files need their own `.*` pattern).
 */
export const DEFAULT_EXCLUDES: readonly string[] = [
  // Temporary by definition; the FHS says /tmp need not survive a reboot.
  'tmp/*',
  'tmp/.*',
  // Runtime state (pid files, sockets) that each boot makes anew.
  'run/*',
  'run/.*',
  // The checkpoint timer's own log: kept, each round's line would be a change for the next checkpoint to save.
  'var/log/cairn-checkpoint.log',
  // Downloaded packages: fetched again when needed, and often large.
  'var/cache/apk/*',
  'var/cache/apt/archives/*.deb',
  'var/cache/apt/archives/partial/*',
  'var/cache/apt/*.bin',
  // Per-user caches, which the XDG spec allows any program to delete.
  'root/.cache/*',
  'home/*/.cache/*',
  // Made by mkfs on an ext4 upper layer, never by the user.
  'lost+found',
];

/** Takes a path relative to the root, in the latin1 byte form of tree.ts. */
export type ExcludeMatcher = (relPath: string) => boolean;

/** A pattern's components, checked: what both the matcher and mksquashfs read alike. */
function patternParts(p: string): string[] {
  const parts = p.split('/').filter(Boolean);
  if (parts.length === 0 || parts.some((s) => s === '..' || s === '.')) {
    throw new Error(`exclude pattern "${p}" must name a path below the root, without . or ..`);
  }
  if (/[[\]\\\n()]/.test(p) || parts[0] === '...') {
    throw new Error(`exclude pattern "${p}" may use only * and ? as wildcards`);
  }
  return parts;
}

export function compileExcludes(patterns: readonly string[]): ExcludeMatcher {
  const compiled = patterns.map((p) =>
    // Paths are matched as bytes, as fnmatch does in mksquashfs.
    patternParts(p).map((part) => componentRegExp(Buffer.from(part, 'utf8').toString('latin1'))),
  );
  return (relPath) => {
    const parts = relPath.split('/');
    return compiled.some((re) => re.length === parts.length && re.every((r, i) => r.test(parts[i]!)));
  };
}

function componentRegExp(glob: string): RegExp {
  let src = '';
  for (const ch of glob) {
    if (ch === '*') src += '[^/]*';
    else if (ch === '?') src += '[^/]';
    else src += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  // FNM_PERIOD: a leading dot is matched only by a literal dot.
  const guard = glob.startsWith('.') ? '' : '(?!\\.)';
  return new RegExp(`^${guard}${src}$`, 's');
}

/**
 * The patterns as lines of mksquashfs's exclude file, written so that it
 * reads each as the matcher does: its components joined by one / (mksquashfs
 * refuses a leading /, which a user may well write), after a backslash,
 * which it takes off (else it drops a leading space and takes a leading #
 * for a comment).
 */
export function patternLines(patterns: readonly string[]): Buffer[] {
  return patterns.map((p) => Buffer.from(`\\${patternParts(p).join('/')}\n`, 'utf8'));
}
