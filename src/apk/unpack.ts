import { chmod, lchown, link, lutimes, mkdir, realpath, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, sep } from 'node:path';
import { ApkFormatError } from './errors.js';
import type { TarEntry } from './tar.js';

/**
 * Writes a package's files into a directory, as apk would lay them out
 * under its root: modes, owners (numeric) and mtimes kept, hard links as
 * links. Nothing is written outside `dir`: a name that would pass through a
 * symlink the package made to somewhere else is refused. Device nodes are
 * refused (no special package ships any).
 */
export async function unpackEntries(entries: readonly TarEntry[], dir: string, source = 'package'): Promise<void> {
  await mkdir(dir, { recursive: true });
  const root = await realpath(dir);
  const dirs: { path: string; entry: TarEntry }[] = [];
  for (const e of entries) {
    if (!e.name || e.name.startsWith('/') || e.name.split('/').some((p) => p === '..' || p === '.' || p === '')) {
      throw new ApkFormatError(source, `"${e.name}" is not a path inside the package`);
    }
    const target = join(root, e.name);
    const parent = await realpath(dirname(target)).catch(() => undefined);
    if (parent === undefined) {
      await mkdir(dirname(target), { recursive: true });
    } else if (parent !== root && !parent.startsWith(root + sep)) {
      throw new ApkFormatError(source, `"${e.name}" would be written through a link to ${parent}`);
    }
    switch (e.type) {
      case 'directory':
        await mkdir(target, { recursive: true });
        dirs.push({ path: target, entry: e });
        break;
      case 'file':
        await writeFile(target, e.content ?? Buffer.alloc(0), { mode: e.mode });
        await chmod(target, e.mode);
        await own(target, e);
        await lutimes(target, e.mtime, e.mtime);
        break;
      case 'symlink':
        await symlink(e.linkTarget ?? '', target);
        await own(target, e);
        await lutimes(target, e.mtime, e.mtime);
        break;
      case 'hardlink':
        await link(join(root, e.linkTarget ?? ''), target);
        break;
      default:
        throw new ApkFormatError(source, `"${e.name}" is a ${e.type} node; cairn does not unpack device nodes from packages`);
    }
  }
  // Directories last, deepest first, so writing into them did not change their times.
  for (const { path, entry } of dirs.reverse()) {
    await chmod(path, entry.mode);
    await own(path, entry);
    await lutimes(path, entry.mtime, entry.mtime);
  }
}

async function own(path: string, e: TarEntry): Promise<void> {
  if (process.getuid?.() !== 0) return;
  await lchown(path, e.uid, e.gid);
}
