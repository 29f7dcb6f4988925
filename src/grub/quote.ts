/**
 * Quoting for GRUB script. GRUB's lexer follows sh: inside single quotes
 * every character is literal, including $, \, ", newlines and GRUB's glob
 * characters; a single quote itself is written as '\'' (close, escaped
 * quote, reopen). NUL cannot appear in a GRUB file at all.
 */

/** Characters GRUB takes literally in a bare word (no variables, globs, separators). */
const BARE = /^[A-Za-z0-9_./,:=+@%-]+$/;

/** One GRUB word that reads back as exactly `value`: bare when that is safe, else single-quoted. */
export function grubWord(value: string): string {
  if (value.includes('\0')) throw new Error('a NUL byte cannot be written into GRUB script');
  if (BARE.test(value)) return value;
  return grubQuote(value);
}

/** `value` single-quoted for GRUB script, always. */
export function grubQuote(value: string): string {
  if (value.includes('\0')) throw new Error('a NUL byte cannot be written into GRUB script');
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/**
 * Whether `value` passes through GRUB onto the kernel command line and out of
 * the initramfs's parser unchanged. GRUB rebuilds the command line from its
 * words, putting a backslash before \ ' and " and double quotes round a word
 * with a space; the kernel and initramfs/lib/cmdline.sh know neither escape,
 * and split at blanks. So such values are refused rather than quoted.
 */
export function kernelSafe(value: string): boolean {
  return value.length > 0 && !/[\s"'\\\x00-\x1f\x7f]/.test(value);
}
