import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { prelude } from '../system/initramfs/fixtures.js';
import { BUSYBOX, busyboxSh } from './initramfs-env.js';

export const CLI = resolve('dist/cairn.mjs');

const TOOL_PACKAGES: Record<string, string> = {
  mksquashfs: 'squashfs-tools',
  unsquashfs: 'squashfs-tools',
  getfattr: 'attr',
  setfattr: 'attr',
  setfacl: 'acl',
  getfacl: 'acl',
  losetup: 'mount',
  'mkfs.ext4': 'e2fsprogs',
  busybox: 'busybox-static',
};

/**
 * System tests use real mounts and loop devices. Without root or a tool they
 * fail here, loudly, with what is missing; they are never skipped.
 */
export function requireSystem(tools: string[] = ['mksquashfs', 'unsquashfs', 'getfattr', 'setfattr', 'losetup', 'mkfs.ext4']): void {
  if (process.getuid?.() !== 0) throw new Error('system tests need root (loop devices, mounts): run them as root');
  for (const tool of tools) {
    const found = ['/usr/sbin', '/usr/bin', '/sbin', '/bin'].some((d) => existsSync(join(d, tool)));
    if (!found) throw new Error(`system tests need ${tool}: apt-get install ${TOOL_PACKAGES[tool] ?? tool}`);
  }
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build`);
}

export async function sh(cmd: string, args: string[], options: { input?: string } = {}): Promise<string> {
  const r = await execa(cmd, args, { input: options.input });
  return r.stdout;
}

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export async function cairn(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  const r = await execa(process.execPath, [CLI, ...args], { reject: false, env, stdin: 'ignore' });
  return { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A scratch directory removed at cleanup; every mount made in it is undone first. */
export class Scratch {
  readonly dir = mkdtempSync(join(tmpdir(), 'cairn-test-'));
  private mounts: string[] = [];

  path(...parts: string[]): string {
    return join(this.dir, ...parts);
  }

  /** An ext4 file system on a loop device, as the data partition is. */
  async dataPartition(name = 'data', sizeMiB = 256): Promise<string> {
    const image = this.path(`${name}.img`);
    const dir = this.path(name);
    await mkdir(dir, { recursive: true });
    await execa('truncate', ['-s', `${sizeMiB}M`, image]);
    await execa('mkfs.ext4', ['-q', '-F', image]);
    await execa('mount', ['-o', 'loop', image, dir]);
    this.mounts.push(dir);
    return dir;
  }

  /** A real overlayfs over `lower`, so the upper dir is made by the kernel. */
  async overlay(lower: string, name = 'ovl'): Promise<{ upper: string; work: string; merged: string }> {
    const upper = this.path(name, 'upper');
    const work = this.path(name, 'work');
    const merged = this.path(name, 'merged');
    await Promise.all([upper, work, merged].map((d) => mkdir(d, { recursive: true })));
    await execa('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}`, merged]);
    this.mounts.push(merged);
    return { upper, work, merged };
  }

  async unmount(dir: string): Promise<void> {
    await execa('umount', [dir]);
    this.mounts = this.mounts.filter((m) => m !== dir);
  }

  async cleanup(): Promise<void> {
    for (const m of this.mounts.reverse()) await execa('umount', ['-l', m], { reject: false });
    this.mounts = [];
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Everything a user could tell apart in a tree, written independently of
 * cairn's own comparison: per path its type, mode, owner, size, link target,
 * device number, user xattrs, content hash, and which paths share an inode.
 */
export async function manifest(root: string, skip: (rel: string) => boolean = () => false): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const inodes = new Map<number, string[]>();
  const walk = (rel: string) => {
    const abs = rel ? join(root, rel) : root;
    const st = lstatSync(abs);
    const type = st.isFile() ? 'f' : st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : st.isCharacterDevice() ? 'c' : st.isBlockDevice() ? 'b' : st.isFIFO() ? 'p' : 's';
    let desc = `${type} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
    if (type === 'f') desc += ` ${st.size} ${createHash('sha256').update(readFileSync(abs)).digest('hex')}`;
    if (type === 'l') desc += ` -> ${readlinkSync(abs)}`;
    if (type === 'c' || type === 'b') desc += ` dev ${st.rdev}`;
    if (type === 'f' && st.nlink > 1) inodes.set(st.ino, [...(inodes.get(st.ino) ?? []), rel]);
    out.set(rel || '.', desc);
    if (type === 'd') for (const name of readdirSync(abs).sort()) {
      const child = rel ? `${rel}/${name}` : name;
      if (!skip(child)) walk(child);
    }
  };
  walk('');
  for (const paths of inodes.values()) for (const p of paths) out.set(p, `${out.get(p)} links ${[...paths].sort().join(',')}`);
  const xattrs = await execa('getfattr', ['--absolute-names', '-R', '-P', '-h', '-d', '-m', '^user\\.', '-e', 'hex', root]);
  let file = '';
  for (const line of xattrs.stdout.split('\n')) {
    if (line.startsWith('# file: ')) file = line.slice(8).slice(root.length + 1) || '.';
    else if (line && out.has(file)) out.set(file, `${out.get(file)} ${line}`);
  }
  return out;
}

/**
 * Unpacks a saved state into DIR as the boot does: the initramfs's
 * state_unpack in busybox sh (unsquashfs, then the ACLs the state records
 * set again and the record removed).
 */
export async function unpackAsBoot(image: string, dir: string): Promise<void> {
  if (!existsSync(BUSYBOX)) throw new Error(`unpacking as the boot does needs ${BUSYBOX}: apt-get install busybox-static`);
  const r = await busyboxSh(`${prelude()}why=$(state_unpack "$IMAGE" "$DIR") || { echo "$IMAGE $why" >&2; exit 1; }`, {
    env: { IMAGE: image, DIR: dir },
    namespace: false,
  });
  if (r.exitCode !== 0) throw new Error(`unpacking as the boot does failed: ${r.stderr}`);
}

/** The contents of one file inside a state image, read with unsquashfs. */
export async function catFromImage(image: string, path: string): Promise<string> {
  const r = await execa('unsquashfs', ['-cat', image, path], { reject: false });
  return r.exitCode === 0 ? r.stdout : `<unreadable: ${r.stderr.trim()}>`;
}

export function listDir(dir: string): string[] {
  return readdirSync(dir).sort();
}
