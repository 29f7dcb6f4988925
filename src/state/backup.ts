import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, open, realpath, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import type { Config } from '../config.js';
import { ESP_PATHS, parseBootState } from '../esp/bootState.js';
import type { Esp } from '../esp/esp.js';
import { fsyncFile, renameDurably } from '../lib/durable.js';
import { BackupFileError, IntegrityError, PartitionFullError, PathError } from '../lib/errors.js';
import { formatBytes } from '../lib/format.js';
import { loopUsesDirectIo, withLoopDevice, withTempDir } from '../lib/resources.js';
import { run } from '../lib/run.js';
import { BACKUP, DATA, modulesImage } from '../names.js';
import { withSaveLock, type SaveLockOptions } from '../save/lock.js';
import { mksquashfsArgs } from '../save/squash.js';
import {
  BLOCK,
  encodeFooter,
  encodeHeader,
  padded,
  parseFooter,
  parseHeader,
  parseManifest,
  type BackupManifest,
  type KernelFileRef,
  type Member,
} from './backupFormat.js';
import { checkIntegrity } from './seal.js';
import { listStates, type StateFile } from './states.js';

export interface BackupOptions {
  file: string;
  dataDir: string;
  lock: SaveLockOptions;
  /** Replace FILE when it exists. */
  force: boolean;
  /** Where the kernels' state is read from; undefined leaves it out (a data partition worked on without its stick). */
  esp: Esp | undefined;
  config: Pick<Config, 'compression' | 'compressionLevel' | 'mksquashfsMem'>;
}

export interface BackupReport {
  file: string;
  bytes: number;
  /** The state's name on the stick, or undefined when the stick had none. */
  state: string | undefined;
  user: boolean;
  kernel: string | undefined;
  /** Whether reading back came from the disk, not from the page cache the writer left. */
  directIo: boolean;
  warnings: string[];
}

/** A member about to be written: where its bytes are now. */
interface Source {
  name: string;
  path: string;
}

/**
 * `cairn backup FILE`: the newest intact state, the user's folder and the
 * kernels' state in one file (docs/backup.md). Written beside FILE under a
 * temp name, fsynced, read back from the disk and checked member by member
 * against the manifest, and only then renamed to FILE: no FILE ever holds a
 * half-written backup. Under the save lock, so no save changes the states
 * while they are copied.
 */
export async function writeBackup(o: BackupOptions): Promise<BackupReport> {
  const file = resolve(o.file);
  await checkTarget(file, o.dataDir, o.force);
  const partial = `${file}${BACKUP.partialSuffix}`;
  const userImage = `${file}${BACKUP.partialSuffix}-user`;
  return withSaveLock(o.dataDir, o.lock, async () => {
    const warnings: string[] = [];
    try {
      return await withTempDir('cairn-backup-', async (work) => {
        const sources: Source[] = [];
        const state = await newestIntact(o.dataDir, warnings);
        const states: BackupManifest['states'] = [];
        if (state) {
          sources.push({ name: 'state-0', path: state.path });
          states.push({ member: 'state-0', id: state.check.seal?.id ?? '', name: state.name });
        }
        let user: BackupManifest['user'] = null;
        const userDir = join(o.dataDir, DATA.userDir);
        if ((await lstat(userDir).catch(() => undefined))?.isDirectory()) {
          await squashUser(userDir, userImage, o.config);
          sources.push({ name: 'user', path: userImage });
          user = { member: 'user' };
        }
        const kernels = o.esp ? await kernelSources(o.esp, o.dataDir, work, sources) : null;
        if (!o.esp) warnings.push('no ESP was given: the kernels\' state is not in the backup');

        await writeContainer(partial, sources, { created: new Date().toISOString(), states, user, kernels });
        await rm(userImage, { force: true });
        const { directIo } = await verifyWritten(partial);
        if (!directIo) warnings.push(`${dirname(file)} does not allow direct I/O: the backup was read back through the page cache`);
        await renameDurably(partial, file);
        return {
          file,
          bytes: (await stat(file)).size,
          state: state?.name,
          user: user !== null,
          kernel: kernels?.release,
          directIo,
          warnings,
        };
      });
    } catch (e) {
      await rm(partial, { force: true });
      await rm(userImage, { force: true });
      throw e;
    }
  });
}

/**
 * Refuses what would make no backup: a FILE on the data partition it backs
 * up (a stick's loss would take both; in user/ it would even hold itself),
 * a folder that is not there, an existing FILE without --force.
 */
async function checkTarget(file: string, dataDir: string, force: boolean): Promise<void> {
  const dir = await realpath(dirname(file)).catch(() => undefined);
  if (!dir) throw new PathError(dirname(file), 'the folder for the backup does not exist');
  const data = await realpath(dataDir);
  if (dir === data || dir.startsWith(data + sep)) {
    throw new PathError(file, `is on the data partition it would back up (${dataDir})`, 'write the backup to another disk: a backup that lives on the stick is lost with it');
  }
  const st = await lstat(file).catch(() => undefined);
  if (st && !st.isFile()) throw new PathError(file, 'exists and is not a file');
  if (st && !force) throw new PathError(file, 'exists', 'pass --force to replace it, or name another file');
}

/** The state a default boot would use, read whole: the newest, else the backup. */
async function newestIntact(dataDir: string, warnings: string[]): Promise<StateFile | undefined> {
  const states = await listStates(dataDir);
  for (const role of ['newest', 'backup'] as const) {
    const s = states.find((x) => x.role === role);
    if (!s) continue;
    if (s.chain) {
      warnings.push(`${s.name} is not in the backup: it is a checkpoint chain, not a whole state (cairn save --full makes it one)`);
      continue;
    }
    const whole = await checkIntegrity(s.path);
    if (whole.ok) return { ...s, check: whole };
    warnings.push(`${s.name} is not in the backup: ${whole.problem}`);
  }
  return undefined;
}

/**
 * The user's folder as a squashfs image. mksquashfs rather than tar: every
 * cairn system has it (the save runs on it), busybox's tar keeps neither
 * xattrs nor hard links reliably, and squashfs keeps owners, modes, mtimes,
 * xattrs, symlinks, hard links and holes, which unsquashfs puts back. POSIX
 * ACLs are not kept (squashfs has no room for them; docs/backup.md).
 */
async function squashUser(userDir: string, image: string, config: BackupOptions['config']): Promise<void> {
  await rm(image, { force: true });
  await writeFile(image, '', { mode: 0o600 });
  await run('mksquashfs', [userDir, image, ...mksquashfsArgs(config), '-no-progress'], {
    timeoutMs: 6 * 3600_000,
    dieWithParent: true,
    hint: 'install squashfs-tools',
  });
}

/**
 * The kernels' state: the ESP's boot record, and the default kernel's files
 * (its image and initramfs on the ESP, its modules image on the data
 * partition), so a restore can make the stick boot the kernel whose modules
 * the restored state was made with.
 */
async function kernelSources(esp: Esp, dataDir: string, work: string, sources: Source[]): Promise<BackupManifest['kernels']> {
  const record = await esp.read(ESP_PATHS.bootState);
  if (!record) throw new PathError(`${esp.device}:/${ESP_PATHS.bootState}`, 'is missing: the ESP was not made by cairn');
  const boot = parseBootState(record.toString('utf8'), `/${ESP_PATHS.bootState}`);
  const release = boot.kernel.release;
  const files: KernelFileRef[] = [];
  const add = (member: string, place: KernelFileRef['place'], path: string, local: string) => {
    sources.push({ name: member, path: local });
    files.push({ member, place, path });
  };
  const bootState = join(work, 'boot-state');
  await writeFile(bootState, record);
  sources.push({ name: 'boot-state', path: bootState });
  for (const [member, path] of [
    ['kernel', ESP_PATHS.kernel(release)],
    ['initramfs', ESP_PATHS.initrd(release)],
  ] as const) {
    const bytes = await esp.read(path);
    if (!bytes) throw new PathError(`${esp.device}:/${path}`, `is missing, though the boot record names kernel ${release}`);
    await writeFile(join(work, member), bytes);
    add(member, 'esp', path, join(work, member));
  }
  const modules = join(dataDir, modulesImage(release));
  if (!existsSync(modules)) throw new PathError(modules, `is missing, though the ESP boots kernel ${release}`);
  add('modules', 'data', modulesImage(release), modules);
  return { bootState: 'boot-state', release, files };
}

/** Header, members, manifest, end block; each member's sha256 taken as it is copied in. Fsynced. */
async function writeContainer(partial: string, sources: readonly Source[], rest: Omit<BackupManifest, 'format' | 'members'>): Promise<void> {
  await rm(partial, { force: true });
  const out = await open(partial, 'wx', 0o600);
  try {
    // The backup holds every secret of the system: root's alone before a byte of it is written.
    await out.chmod(0o600);
    await out.write(encodeHeader(), 0, BLOCK, 0);
    let offset = BLOCK;
    const members: Member[] = [];
    for (const s of sources) {
      const { size, sha256 } = await copyInto(s.path, out, offset);
      members.push({ name: s.name, offset, size, sha256 });
      offset += padded(size);
    }
    const manifest: BackupManifest = { format: BACKUP.format, ...rest, members };
    const text = Buffer.from(`${JSON.stringify(manifest, null, 1)}\n`);
    await out.write(text, 0, text.length, offset);
    await zeroFill(out, offset + text.length);
    const footer = encodeFooter({ manifestOffset: offset, manifestSize: text.length, manifestSha256: sha(text) });
    await out.write(footer, 0, BLOCK, offset + padded(text.length));
    await out.sync();
  } finally {
    await out.close();
  }
}

async function copyInto(path: string, out: Awaited<ReturnType<typeof open>>, offset: number): Promise<{ size: number; sha256: string }> {
  const hash = createHash('sha256');
  const input = await open(path, 'r');
  const buf = Buffer.allocUnsafe(4 << 20);
  let size = 0;
  try {
    for (;;) {
      const { bytesRead } = await input.read(buf, 0, buf.length, size);
      if (bytesRead === 0) break;
      hash.update(buf.subarray(0, bytesRead));
      await out.write(buf, 0, bytesRead, offset + size);
      size += bytesRead;
    }
  } finally {
    await input.close();
  }
  await zeroFill(out, offset + size);
  return { size, sha256: hash.digest('hex') };
}

/** Zeros from `end` to the next block boundary. */
async function zeroFill(out: Awaited<ReturnType<typeof open>>, end: number): Promise<void> {
  const n = padded(end) - end;
  if (n) await out.write(Buffer.alloc(n), 0, n, end);
}

/**
 * Reads the written file back through a loop device that reads with
 * O_DIRECT, so the checksums come from the disk and not from the page cache
 * the writer filled (as the save verifies a state).
 */
async function verifyWritten(partial: string): Promise<{ directIo: boolean }> {
  await fsyncFile(partial);
  const size = (await stat(partial)).size;
  return withLoopDevice(partial, { readOnly: true, directIo: true }, async (device) => {
    try {
      await readBackup(partial, { device, size });
    } catch (e) {
      if (!(e instanceof BackupFileError)) throw e;
      // What was written is not what reads back: the disk the backup goes to is failing.
      throw new IntegrityError(partial, `the backup did not read back as it was written: ${e.problem}; it was removed`);
    }
    return { directIo: loopUsesDirectIo(device) };
  });
}

export interface ReadOptions {
  /** Read the bytes from this device (the file behind a loop device) rather than the file. */
  device?: string;
  size?: number;
}

/**
 * Checks a whole backup: its header, its end block, its manifest and the
 * checksum of every member. Throws BackupFileError on the first thing wrong;
 * returns the manifest of a backup that is whole.
 */
export async function readBackup(file: string, options: ReadOptions = {}): Promise<BackupManifest> {
  const st = await stat(file).catch(() => undefined);
  if (!st) throw new PathError(file, 'does not exist');
  if (!st.isFile()) throw new PathError(file, 'is not a file');
  const size = options.size ?? st.size;
  const fail = (p: { problem: string; kind: BackupFileError['kind'] }): never => {
    throw new BackupFileError(
      file,
      p.problem,
      p.kind,
      p.kind === 'newer' ? 'restore it with the cairn that wrote it, or a newer one' : p.kind === 'damaged' ? 'nothing was changed; use another copy of the backup' : undefined,
    );
  };
  const fh = await open(options.device ?? file, 'r');
  try {
    if (size < 2 * BLOCK) {
      const head = await readAt(fh, 0, Math.min(size, BLOCK));
      const header = parseHeader(Buffer.concat([head, Buffer.alloc(BLOCK - head.length)]));
      if ('problem' in header) fail(header);
      fail({ kind: 'damaged', problem: `it is only ${size} bytes: truncated` });
    }
    // Every byte counts, padding too: a flipped bit anywhere says the copy is not the one written.
    const headBlock = await readAt(fh, 0, BLOCK);
    const header = parseHeader(headBlock);
    if ('problem' in header) fail(header);
    if (!headBlock.equals(encodeHeader())) fail({ kind: 'damaged', problem: 'its header is damaged' });
    const endBlock = await readAt(fh, size - BLOCK, BLOCK);
    const footer = parseFooter(endBlock, size);
    if ('problem' in footer) return fail(footer);
    if (!endBlock.equals(encodeFooter(footer))) fail({ kind: 'damaged', problem: 'its end block is damaged' });
    const text = await readAt(fh, footer.manifestOffset, footer.manifestSize);
    if (sha(text) !== footer.manifestSha256) fail({ kind: 'damaged', problem: 'its manifest does not match its checksum: the file is damaged' });
    if (!(await zerosAfter(fh, footer.manifestOffset, footer.manifestSize))) fail({ kind: 'damaged', problem: 'the padding after its manifest is damaged' });
    const manifest = parseManifest(text.toString('utf8'), footer.manifestOffset);
    if ('problem' in manifest) return fail(manifest);
    for (const m of manifest.members) {
      if ((await hashRange(fh, m.offset, m.size)) !== m.sha256) {
        fail({ kind: 'damaged', problem: `its ${m.name} does not match its checksum: the file is damaged` });
      }
      if (!(await zerosAfter(fh, m.offset, m.size))) fail({ kind: 'damaged', problem: `the padding after its ${m.name} is damaged` });
    }
    return manifest;
  } finally {
    await fh.close();
  }
}

/**
 * Copies a member out of a backup to DEST (made with MODE, fsynced),
 * checking its checksum on the way: the file may have changed since it was
 * verified. A mismatch removes DEST.
 */
export async function extractMember(file: string, member: Member, dest: string, mode: number): Promise<void> {
  const input = await open(file, 'r');
  await rm(dest, { force: true });
  const out = await open(dest, 'wx', mode);
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(4 << 20);
  try {
    await out.chmod(mode);
    let done = 0;
    while (done < member.size) {
      const n = (await input.read(buf, 0, Math.min(buf.length, member.size - done), member.offset + done)).bytesRead;
      if (n === 0) throw new BackupFileError(file, 'it ended early while being read: truncated', 'damaged');
      hash.update(buf.subarray(0, n));
      await out.write(buf, 0, n, done);
      done += n;
    }
    await out.sync();
    if (hash.digest('hex') !== member.sha256) {
      throw new BackupFileError(file, `its ${member.name} changed since it was checked`, 'damaged', 'nothing of it was installed; use another copy of the backup');
    }
  } catch (e) {
    await out.close();
    await rm(dest, { force: true });
    if ((e as NodeJS.ErrnoException).code === 'ENOSPC') {
      throw new PartitionFullError(`${dirname(dest)} is full: the backup's ${member.name} (${formatBytes(member.size)}) did not fit`, 'free space there (older states, files in user/), then restore again; what was there is as it was');
    }
    throw e;
  } finally {
    await input.close();
    await out.close().catch(() => undefined);
  }
}

/** A member's bytes, for the small ones (the boot record). */
export async function readMember(file: string, member: Member): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const bytes = await readAt(fh, member.offset, member.size);
    if (sha(bytes) !== member.sha256) throw new BackupFileError(file, `its ${member.name} changed since it was checked`, 'damaged');
    return bytes;
  } finally {
    await fh.close();
  }
}

export function memberOf(manifest: BackupManifest, name: string): Member {
  const m = manifest.members.find((x) => x.name === name);
  if (!m) throw new Error(`the manifest has no member ${name}`);
  return m;
}

async function readAt(fh: Awaited<ReturnType<typeof open>>, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return buf.subarray(0, done);
}

/** Whether the padding from a part's end to the next block boundary is all zeros. */
async function zerosAfter(fh: Awaited<ReturnType<typeof open>>, offset: number, size: number): Promise<boolean> {
  const n = padded(size) - size;
  const pad = await readAt(fh, offset + size, n);
  return pad.length === n && pad.every((b) => b === 0);
}

async function hashRange(fh: Awaited<ReturnType<typeof open>>, offset: number, size: number): Promise<string> {
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(4 << 20);
  let done = 0;
  while (done < size) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - done), offset + done);
    if (bytesRead === 0) break;
    hash.update(buf.subarray(0, bytesRead));
    done += bytesRead;
  }
  return hash.digest('hex');
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}
