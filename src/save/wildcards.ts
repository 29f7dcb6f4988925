/**
 * Lines of mksquashfs's exclude file under -wildcards: each line is a
 * pattern matched one path component at a time with fnmatch, extended
 * patterns such as !(a|b) included. Paths are in the latin1 form tree.ts
 * keys them by.
 *
 * A backslash makes the next character literal, except for [ | ( and ),
 * which glibc's fnmatch reads inside !(...) whatever comes before them (it
 * looks for the end of a bracket expression, or of an alternative); a
 * bracket expression holds each of those instead. A newline cannot be
 * written in a line: a bracket expression of every other byte a name can
 * hold, negated, stands for it (mksquashfs never sets a locale, so fnmatch
 * compares bytes). Every line starts with a backslash, which mksquashfs
 * takes off (its way to write a leading space or #).
 *
 * mksquashfs gives up on the whole exclude file at a line longer than
 * EXCLUDE_LINE_MAX: a save or checkpoint would then fail every time. No
 * line is made longer (undefined instead, for the caller to do without).
 */
const NEWLINE = '[!\x01-\x09\x0b-\xff]';

const escape = (text: string): string =>
  text
    .replace(/[\\*?\]+@!.]/g, '\\$&')
    .replace(/[[|()]/g, '[$&]')
    .replace(/\n/g, NEWLINE);

/** The longest line mksquashfs reads from an exclude file, its newline left aside (MAX_LINE - 1). */
export const EXCLUDE_LINE_MAX = 16383;

const line = (pattern: string): Buffer | undefined =>
  Buffer.byteLength(pattern, 'latin1') + 1 <= EXCLUDE_LINE_MAX ? Buffer.from(`\\${pattern}\n`, 'latin1') : undefined;

/** Whether literalExclude(rel) fits in a line; most paths are too short to need building it (no escape is longer than NEWLINE). */
export function canExclude(rel: string): boolean {
  return rel.length * NEWLINE.length < EXCLUDE_LINE_MAX || literalExclude(rel) !== undefined;
}

/** A line that leaves out exactly `rel`, or undefined when it would be too long. */
export function literalExclude(rel: string): Buffer | undefined {
  return line(escape(rel));
}

/**
 * A line that leaves out everything in the directory `dir` (the tree's root
 * as "") but the names `kept` (all of it when none is kept), or undefined
 * when it would be too long.
 */
export function allButExclude(dir: string, kept: readonly string[]): Buffer | undefined {
  return line(`${dir ? `${escape(dir)}/` : ''}!(${kept.map(escape).join('|')})`);
}

/**
 * The lines that leave out the names `left` of the directory `dir` and keep
 * its names `kept` (its whole listing between them): one line per name left
 * out, or one that names what is kept when that is fewer names for
 * mksquashfs to match and fits in a line. A name whose own line would be
 * too long is not left out (`notLeftOut`): only a path thousands of bytes
 * long, most of it escaped, comes to that.
 */
export function excludeFromDir(dir: string, kept: readonly string[], left: readonly string[]): { lines: Buffer[]; notLeftOut: string[] } {
  const notLeftOut: string[] = [];
  if (left.length === 0) return { lines: [], notLeftOut };
  const allBut = kept.length < left.length ? allButExclude(dir, kept) : undefined;
  if (allBut) return { lines: [allBut], notLeftOut };
  const lines: Buffer[] = [];
  for (const name of left) {
    const rel = dir ? `${dir}/${name}` : name;
    const one = literalExclude(rel);
    if (one) lines.push(one);
    else notLeftOut.push(rel);
  }
  return { lines, notLeftOut };
}
