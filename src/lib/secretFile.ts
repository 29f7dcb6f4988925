import { readFile } from 'node:fs/promises';
import { UsageError } from './errors.js';

/**
 * A secret (a password, a passphrase) from FILE ('-': standard input): its
 * first line, without the line end. It is never taken from the command
 * line, where every user of the machine can read it; and it is one line,
 * because a console prompt reads one line.
 */
export async function readSecretLine(file: string, what: 'password' | 'passphrase'): Promise<string> {
  let text: string;
  try {
    text = file === '-' ? await readStdin() : await readFile(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read the ${what} from ${file}: ${(e as Error).message}`);
  }
  const [first = '', ...rest] = text.replace(/\r?\n$/, '').split(/\r?\n/);
  if (rest.length > 0) throw new UsageError(`the ${what} file ${file === '-' ? '(standard input)' : file} holds more than one line: a ${what} is one line`);
  if (first === '') throw new UsageError(`the ${what} from ${file === '-' ? 'standard input' : file} is empty`);
  return first;
}

async function readStdin(): Promise<string> {
  const parts: Buffer[] = [];
  for await (const part of process.stdin) parts.push(part as Buffer);
  return Buffer.concat(parts).toString('utf8');
}
