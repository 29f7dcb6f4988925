import { CairnError } from '../lib/errors.js';

/**
 * GRUB's environment block (grub-editenv(1)): exactly 1024 bytes, a header
 * line, `name=value` lines, and '#' padding to the end. GRUB's save_env
 * writes it in place, into the blocks the file already has, so it must be
 * there, whole and of that size, before GRUB can count a boot in it.
 */
export const GRUBENV_SIZE = 1024;
const HEADER = '# GRUB Environment Block\n';

export type GrubEnv = Map<string, string>;

export function parseGrubEnv(block: Buffer, source: string): GrubEnv {
  const text = block.toString('latin1');
  if (block.length !== GRUBENV_SIZE || !text.startsWith(HEADER)) {
    throw new CairnError(`${source} is not a GRUB environment block (${block.length} bytes)`, {
      hint: 'run `cairn boot retry` to write a new one',
    });
  }
  const env: GrubEnv = new Map();
  for (const line of text.slice(HEADER.length).split('\n')) {
    if (line.startsWith('#')) break;
    const eq = line.indexOf('=');
    if (eq > 0) env.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return env;
}

/** The block for ENV; a name or value GRUB could not read back is refused. */
export function formatGrubEnv(env: GrubEnv): Buffer {
  let body = HEADER;
  for (const [name, value] of env) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) || /[\n\\]/.test(value)) {
      throw new CairnError(`"${name}=${value}" cannot go into GRUB's environment block`);
    }
    body += `${name}=${value}\n`;
  }
  if (body.length > GRUBENV_SIZE) throw new CairnError('GRUB\'s environment block is full');
  return Buffer.from(body.padEnd(GRUBENV_SIZE, '#'), 'latin1');
}
