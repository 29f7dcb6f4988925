import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncFile } from '../lib/durable.js';
import { CairnError, PartitionFullError } from '../lib/errors.js';
import { withTempDir } from '../lib/resources.js';
import { run, type RunResult } from '../lib/run.js';

const MTOOLS_HINT = 'install mtools (apt-get install mtools / apk add mtools)';

/** Names on the ESP that mtools refuses or that GRUB's FAT reader could misread. */
const SAFE_PATH = /^(?:[A-Za-z0-9._+-]+\/)*[A-Za-z0-9._+-]+$/;

/**
 * The ESP, read and written with mtools and never mounted.
 *
 * Nothing in a running cairn mounts the ESP, so a power cut never finds it
 * mounted with dirty FAT buffers, and the same code writes the ESP of a
 * running stick (a block device) and of an image file (the image builder
 * and the tests, on build machines whose kernels may lack vfat).
 *
 * FAT has no atomic rename-over: a file is replaced by writing a temp name,
 * flushing, and renaming over the old name, which leaves either version
 * complete. Each step is followed by an fsync of the device, since mtools
 * writes through the page cache and never syncs.
 */
export class Esp {
  /**
   * @param device the ESP's block device, or an image file holding a FAT file system
   * @param offset bytes from the start of `device` to the file system (a partition in a disk image)
   */
  constructor(
    readonly device: string,
    readonly offset = 0,
  ) {}

  /** "disk.img@@1048576" for mtools' -i. */
  private get drive(): string {
    return this.offset ? `${this.device}@@${this.offset}` : this.device;
  }

  private async mtools(tool: string, args: readonly string[], what: string, okExitCodes: number[] = []): Promise<RunResult> {
    const result = await run(tool, ['-i', this.drive, ...args], {
      timeoutMs: 600_000,
      // Skip mtools' sanity check of the boot sector's geometry: images made by
      // mkfs.vfat -C fail it for no reason that matters to reading files.
      env: { MTOOLS_SKIP_CHECK: '1', MTOOLS_NO_VFAT: '', LC_ALL: 'C' },
      okExitCodes: [1, ...okExitCodes],
      hint: MTOOLS_HINT,
    });
    if (result.exitCode !== 0 && !okExitCodes.includes(result.exitCode)) {
      if (/disk full|no free clusters|not enough space/i.test(result.stderr)) {
        throw new PartitionFullError(`the ESP (${this.device}) is full: ${what} did not fit`, 'remove old kernels from the ESP or use a larger one');
      }
      throw new CairnError(`${what} on the ESP (${this.device}) failed: ${result.stderr.trim() || `${tool} exited with ${result.exitCode}`}`, {
        hint: 'is the ESP a FAT file system? cairn finds it by label CAIRN-ESP',
      });
    }
    return result;
  }

  /** The names in a directory of the ESP ("" for the top), as stored. */
  async list(dir = ''): Promise<string[]> {
    const target = `::${checkPath(dir, true)}`;
    const r = await this.mtools('mdir', ['-b', target], `listing /${dir}`, [1]);
    if (r.exitCode !== 0) return [];
    const prefix = `::/${dir ? `${dir}/` : ''}`;
    return r.stdout
      .split('\n')
      .filter((l) => l.startsWith(prefix))
      .map((l) => l.slice(prefix.length).replace(/\/$/, ''))
      .filter((n) => n && !n.includes('/'));
  }

  /** Whether a file is on the ESP; FAT compares names without case. */
  async exists(path: string): Promise<boolean> {
    const slash = path.lastIndexOf('/');
    const names = await this.list(slash < 0 ? '' : path.slice(0, slash));
    const name = path.slice(slash + 1).toLowerCase();
    return names.some((n) => n.toLowerCase() === name);
  }

  /** A file's bytes, or undefined when it is not there. */
  async read(path: string): Promise<Buffer | undefined> {
    checkPath(path);
    if (!(await this.exists(path))) return undefined;
    return withTempDir('cairn-esp-', async (dir) => {
      const local = join(dir, 'file');
      await this.mtools('mcopy', ['-n', '-o', `::${path}`, local], `reading /${path}`);
      return readFile(local);
    });
  }

  /** Free bytes, from mdir's summary line. */
  async freeBytes(): Promise<number> {
    const r = await this.mtools('mdir', ['::'], 'reading the free space');
    const m = /([0-9][0-9 ]*) bytes free/.exec(r.stdout);
    if (!m) throw new CairnError(`cannot read the free space of the ESP (${this.device}) from mdir`);
    return Number(m[1]!.replace(/ /g, ''));
  }

  /** Makes a directory and its parents, if missing. */
  async mkdirs(dir: string): Promise<void> {
    checkPath(dir);
    const parts = dir.split('/');
    for (let i = 1; i <= parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!(await this.exists(d))) await this.mtools('mmd', [`::${d}`], `making /${d}`);
    }
    await this.flush();
  }

  /**
   * Puts a file on the ESP so that a power cut at any moment leaves the old
   * version or the new one, whole: temp name, flush, rename over, flush.
   * A failure removes the temp file.
   */
  async install(path: string, source: { file: string } | { data: string | Buffer }): Promise<void> {
    checkPath(path);
    const slash = path.lastIndexOf('/');
    if (slash > 0) await this.mkdirs(path.slice(0, slash));
    const temp = `${path}.cairn-new`;
    await withTempDir('cairn-esp-', async (dir) => {
      let local: string;
      if ('file' in source) local = source.file;
      else {
        local = join(dir, 'data');
        await writeFile(local, source.data);
      }
      try {
        await this.mtools('mcopy', ['-n', '-o', local, `::${temp}`], `writing /${path}`);
        await this.flush();
        await this.mtools('mren', ['-D', 'o', `::${temp}`, `::${path}`], `renaming /${temp} to /${path}`);
        await this.flush();
      } catch (e) {
        await this.remove(temp).catch(() => undefined);
        throw e;
      }
    });
  }

  /**
   * Replaces a directory with a copy of a local one: the copy goes in under
   * a temp name, then two renames swap it in and the old one is deleted.
   * A power cut leaves the old directory, the new one, or (between the
   * renames) neither under its name, so nothing a boot needs may live in one.
   */
  async replaceTree(dir: string, localDir: string): Promise<void> {
    checkPath(dir);
    const slash = dir.lastIndexOf('/');
    if (slash > 0) await this.mkdirs(dir.slice(0, slash));
    const temp = `${dir}.cairn-new`;
    const old = `${dir}.cairn-old`;
    for (const leftover of [temp, old]) await this.removeTree(leftover);
    try {
      await this.mtools('mcopy', ['-s', '-n', '-o', localDir, `::${temp}`], `writing /${dir}`);
      await this.flush();
    } catch (e) {
      await this.removeTree(temp).catch(() => undefined);
      throw e;
    }
    if (await this.exists(dir)) await this.mtools('mren', [`::${dir}`, `::${old}`], `renaming /${dir}`);
    await this.mtools('mren', [`::${temp}`, `::${dir}`], `renaming /${temp} to /${dir}`);
    await this.flush();
    await this.removeTree(old);
  }

  /** Removes a directory and all in it, if it is there. */
  async removeTree(dir: string): Promise<void> {
    checkPath(dir);
    if (!(await this.exists(dir))) return;
    await this.mtools('mdeltree', [`::${dir}`], `removing /${dir}`);
    await this.flush();
  }

  /** Removes a file if it is there. */
  async remove(path: string): Promise<void> {
    checkPath(path);
    if (!(await this.exists(path))) return;
    await this.mtools('mdel', [`::${path}`], `removing /${path}`);
    await this.flush();
  }

  /** mtools writes through the page cache: push it to the stick. */
  private async flush(): Promise<void> {
    await fsyncFile(this.device);
  }
}

function checkPath(path: string, allowEmpty = false): string {
  if (allowEmpty && path === '') return path;
  if (!SAFE_PATH.test(path) || path.split('/').some((p) => p === '.' || p === '..')) {
    throw new CairnError(`"${path}" is not a file name cairn writes on the ESP`);
  }
  return path;
}

