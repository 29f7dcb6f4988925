/**
 * Progress on a terminal: one line, redrawn in place, on stderr so that
 * stdout carries only the result. Silent when stderr is not a terminal.
 */
import { createInterface } from 'node:readline/promises';
export interface Progress {
  phase(name: string): void;
  fraction(name: string, f: number): void;
  done(): void;
}

export function terminalProgress(enabled = true, stream: NodeJS.WriteStream = process.stderr): Progress {
  if (!enabled || !stream.isTTY) return { phase() {}, fraction() {}, done() {} };
  let last = '';
  const draw = (text: string) => {
    if (text === last) return;
    last = text;
    stream.write(`\r\x1b[K${text}`);
  };
  return {
    phase: (name) => draw(`${name}...`),
    fraction: (name, f) => draw(`${name} ${Math.floor(f * 100)}%`),
    done: () => {
      if (last) stream.write('\r\x1b[K');
      last = '';
    },
  };
}

/**
 * Progress as plain lines on STREAM, for a log or a console that is not a
 * terminal (the shutdown save writes to every console through a pipe): each
 * phase once, and its share done at every quarter.
 */
export function lineProgress(stream: NodeJS.WritableStream = process.stderr): Progress {
  let last = '';
  const line = (text: string) => {
    if (text === last) return;
    last = text;
    stream.write(`${text}\n`);
  };
  return {
    phase: (name) => line(`${name}...`),
    fraction: (name, f) => line(`${name} ${Math.floor(f * 4) * 25}%`),
    done: () => {},
  };
}

/** Asks a yes/no question on the terminal; false without one. */
export async function confirm(question: string): Promise<boolean> {
  const answer = await ask(`${question} [y/N] `);
  return answer !== undefined && /^y(es)?$/i.test(answer);
}

/** Asks for WORD to be typed, for what cannot be undone; false without a terminal. */
export async function confirmTyped(question: string, word: string): Promise<boolean> {
  return (await ask(`${question}\nType ${word} to go on: `)) === word;
}

/** The line typed on the terminal, trimmed; undefined without one. */
async function ask(prompt: string): Promise<string | undefined> {
  if (!process.stdin.isTTY || !process.stderr.isTTY) return undefined;
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return (await rl.question(prompt)).trim();
  } finally {
    rl.close();
  }
}
