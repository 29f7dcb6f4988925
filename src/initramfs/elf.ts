/**
 * What a program needs to run in the initramfs: its ELF interpreter (the
 * dynamic loader, read from its PT_INTERP header) and the shared libraries
 * that loader resolves on the machine, or in the root, the program is from. Nothing is run but the loader in
 * its list mode (what ldd does), and only files are read.
 */
import { readFile } from 'node:fs/promises';
import { LibraryMissingError } from '../lib/errors.js';
import { realpathIn, runIn } from './programs.js';

const PT_INTERP = 3;

/** The interpreter path in an ELF file's program headers; undefined for a static program. */
export function elfInterpreter(elf: Buffer, what = 'file'): string | undefined {
  if (elf.length < 52 || elf.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${what} is not an ELF program`);
  const is64 = elf[4] === 2;
  const le = elf[5] === 1;
  const u16 = (o: number) => (le ? elf.readUInt16LE(o) : elf.readUInt16BE(o));
  const u32 = (o: number) => (le ? elf.readUInt32LE(o) : elf.readUInt32BE(o));
  const word = (o: number) => (is64 ? Number(le ? elf.readBigUInt64LE(o) : elf.readBigUInt64BE(o)) : u32(o));
  const phoff = word(is64 ? 0x20 : 0x1c);
  const phentsize = u16(is64 ? 0x36 : 0x2a);
  const phnum = u16(is64 ? 0x38 : 0x2c);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + phentsize > elf.length) break;
    if (u32(ph) !== PT_INTERP) continue;
    const offset = word(ph + (is64 ? 0x08 : 0x04));
    const size = word(ph + (is64 ? 0x20 : 0x10));
    return elf.subarray(offset, offset + size).toString('latin1').replace(/\0.*$/s, '');
  }
  return undefined;
}

/**
 * Parses the loader's list (`ld.so --list`, glibc and musl alike):
 * "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)".
 * Returns the absolute paths and the names the loader could not find.
 */
export function parseLoaderList(text: string): { paths: string[]; missing: string[] } {
  const paths: string[] = [];
  const missing: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    let m: RegExpExecArray | null;
    if ((m = /^(\S+)\s+=>\s+not found/.exec(line))) missing.push(m[1]!);
    else if ((m = /=>\s+(\/\S+)/.exec(line))) paths.push(m[1]!);
    else if ((m = /^(\/\S+)(\s+\(0x[0-9a-f]+\))?$/.exec(line))) paths.push(m[1]!);
  }
  return { paths: [...new Set(paths)], missing };
}

/**
 * The files PROGRAM (a path in ROOT) needs at run time: its interpreter and
 * libraries, as absolute paths in ROOT.
 */
export async function sharedLibraries(program: string, root = '/'): Promise<string[]> {
  const interp = elfInterpreter(await readFile(realpathIn(root, program)), program);
  if (interp === undefined) return [];
  const { stdout } = await runIn(root, interp, ['--list', program], {
    timeoutMs: 30_000,
    okExitCodes: [1],
    env: { LC_ALL: 'C' },
    hint: `${program} wants the loader ${interp}, which is not on this machine`,
  });
  const { paths, missing } = parseLoaderList(stdout);
  if (missing.length > 0) throw new LibraryMissingError(program, missing[0]!);
  return [...new Set([interp, ...paths])].sort();
}
