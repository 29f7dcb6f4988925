/**
 * An independent reader of GRUB script words, for the tests: GRUB's lexer
 * follows sh for quoting ('...' literal, \x outside quotes is x). A character
 * GRUB would treat specially outside quotes makes it fail, so a test can tell
 * "read back the same" from "read back the same by luck".
 */
const SPECIAL = new Set([...'$;&|<>{}*?[]"#~`() \t\n']);

export function readWords(line: string): string[] {
  const words: string[] = [];
  let w = '';
  let have = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new Error(`unterminated quote in ${line}`);
      w += line.slice(i + 1, end);
      have = true;
      i = end;
    } else if (c === '\\') {
      w += line[++i] ?? '';
      have = true;
    } else if (c === ' ' || c === '\t') {
      if (have) words.push(w);
      w = '';
      have = false;
    } else if (SPECIAL.has(c)) {
      throw new Error(`unquoted ${JSON.stringify(c)} in ${line}`);
    } else {
      w += c;
      have = true;
    }
  }
  if (have) words.push(w);
  return words;
}

/** Strings meant to break out of a GRUB word. */
export const HOSTILE = [
  "it's",
  "'",
  "''",
  "'\\''",
  '"double"',
  '$root',
  '${prefix}/x',
  '$(reboot)',
  '`reboot`',
  'a;reboot',
  'a && reboot',
  'a | b',
  'x > /dev/null',
  '{ }',
  '} menuentry x {',
  '*',
  '/boot/*.img',
  '[a-z]?',
  '# not a comment',
  'back\\slash',
  'trailing\\',
  'tab\there',
  'new\nline',
  '~user',
  'ünïcödé ✓',
  '-- --id x',
  '',
  ' ',
];
