/**
 * The initramfs's file tree as it is assembled in memory: every path once,
 * parent directories made as needed, then handed to the cpio writer.
 */
import type { CpioEntry } from './cpio.js';
import { normalizeArchivePath } from './cpio.js';

export class ArchiveTree {
  private readonly entries = new Map<string, CpioEntry>();

  /** Makes DIR and its parents (mode 0755), like mkdir -p. */
  dir(path: string, mode = 0o755): void {
    const parts = normalizeArchivePath(path).split('/');
    for (let i = 1; i <= parts.length; i++) {
      const p = parts.slice(0, i).join('/');
      const have = this.entries.get(p);
      if (have && have.type !== 'dir') throw new Error(`initramfs: ${p} is both a directory and a ${have.type}`);
      if (!have) this.entries.set(p, { path: p, type: 'dir', mode: i === parts.length ? mode : 0o755 });
    }
  }

  file(path: string, data: Buffer, mode: number): void {
    this.put({ path: normalizeArchivePath(path), type: 'file', data, mode });
  }

  symlink(path: string, target: string): void {
    this.put({ path: normalizeArchivePath(path), type: 'symlink', target });
  }

  chardev(path: string, mode: number, major: number, minor: number): void {
    this.put({ path: normalizeArchivePath(path), type: 'chardev', mode, major, minor });
  }

  has(path: string): boolean {
    return this.entries.has(normalizeArchivePath(path));
  }

  /** All entries; their order does not matter (the writer sorts). */
  list(): CpioEntry[] {
    return [...this.entries.values()];
  }

  private put(entry: CpioEntry): void {
    const parent = entry.path.includes('/') ? entry.path.slice(0, entry.path.lastIndexOf('/')) : undefined;
    if (parent) this.dir(parent);
    const have = this.entries.get(entry.path);
    if (have && !sameEntry(have, entry)) throw new Error(`initramfs: two different files for ${entry.path}`);
    this.entries.set(entry.path, entry);
  }
}

function sameEntry(a: CpioEntry, b: CpioEntry): boolean {
  if (a.type !== b.type) return false;
  if (a.type === 'file' && b.type === 'file') return a.mode === b.mode && a.data.equals(b.data);
  if (a.type === 'symlink' && b.type === 'symlink') return a.target === b.target;
  return JSON.stringify(a) === JSON.stringify(b);
}
