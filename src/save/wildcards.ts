/**
 * Lines of mksquashfs's exclude file under -wildcards: each line is a
 * pattern matched one path component at a time with fnmatch, extended
 * patterns such as !(a|b) included. Paths are in the latin1 form tree.ts
 * keys them by.
 *
 * A backslash makes the next character literal, except for [ | ( and ),
 * which glibc's fnmatch reads inside !(...) whatever comes before them (it
 * looks for the end of a bracket expression, or of an alternative); a
 * bracket expression holds each of those instead. A newline cannot be written in a line:
 * `?` stands for it, which matches any one character, so only a pattern
 * that keeps what it matches (allBut) may hold one. Every line starts with a
 * backslash, which mksquashfs takes off (its way to write a leading space
 * or #).
 */
const escape = (text: string): string =>
  text
    .replace(/[\\*?\]+@!.]/g, '\\$&')
    .replace(/[[|()]/g, '[$&]')
    .replace(/\n/g, '?');

/**
 * A line that leaves out exactly `rel`, or more than it when it holds a
 * newline: a sibling name that differs from it only there.
 */
export function literalExclude(rel: string): Buffer {
  return Buffer.from(`\\${escape(rel)}\n`, 'latin1');
}

/**
 * A line that leaves out everything in the directory `dir` (the tree's root
 * as "") but the names `kept`: all of it when none is kept, and less when a
 * kept name holds a newline (a sibling name that differs from it only
 * there is kept too).
 */
export function allButExclude(dir: string, kept: readonly string[]): Buffer {
  return Buffer.from(`\\${dir ? `${escape(dir)}/` : ''}!(${kept.map(escape).join('|')})\n`, 'latin1');
}

/**
 * The lines that leave out the names `left` of the directory `dir` and keep
 * its names `kept` (its whole listing between them): one line per name left
 * out, or one that names what is kept, whichever is shorter for mksquashfs
 * to match, and always the latter when a name left out holds a newline.
 */
export function excludeFromDir(dir: string, kept: readonly string[], left: readonly string[]): Buffer[] {
  if (left.length === 0) return [];
  if (kept.length < left.length || left.some((name) => name.includes('\n'))) return [allButExclude(dir, kept)];
  return left.map((name) => literalExclude(dir ? `${dir}/${name}` : name));
}
