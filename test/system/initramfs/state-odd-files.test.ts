/**
 * The boot's choice of state when a state's name holds something other than
 * a state image: a directory, a dangling symbolic link, a symbolic link to an
 * intact state elsewhere. None is unpacked or followed; the boot falls back
 * as for a damaged state and says why, in the words cairn status uses.
 */
import { copyFile, mkdir, readFile, rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyValues, requireRoot, requireTools } from '../../helpers/initramfs-env.js';
import { buildState, Sandbox } from './fixtures.js';

let sb: Sandbox;
let newest: string;
let backup: string;
let roots = 0;

beforeAll(async () => {
  requireRoot('mount namespaces');
  requireTools(['busybox', 'unshare', 'mksquashfs', 'setfattr']);
  sb = await Sandbox.create('odd-states');
  newest = sb.path('newest.squashfs');
  backup = sb.path('backup.squashfs');
  await buildState(sb, newest, 'newest');
  await buildState(sb, backup, 'backup');
});

afterAll(async () => {
  await sb?.cleanup();
});

/**
 * Runs state_select REQUESTED on a data directory that holds the backup and
 * whatever PUT adds; returns what it chose, why, and what it said.
 */
async function select(requested: string, put: (data: string) => Promise<void>) {
  const root = await sb.root(`root-${roots++}`);
  const data = join(root, 'persist');
  await mkdir(data);
  await copyFile(backup, join(data, 'upperfs-backup.squashfs'));
  await put(data);
  const r = await sb.lib(
    `state_select ${requested}
echo "used=$cairn_used"
echo "state_id=$cairn_state_id"
echo "fallback=$cairn_fallback"`,
    { root, binds: [], run: false },
  );
  expect(r.exitCode, r.stderr).toBe(0);
  return { ...keyValues(r.stdout), console: r.stderr };
}

describe('state_select with something other than a state image under a state name', () => {
  it.each([
    ['a directory', 'a directory', (p: string) => mkdir(p)],
    ['a dangling symbolic link', 'a symbolic link', (p: string) => symlink('/nowhere/upperfs.squashfs', p)],
    ['a symbolic link to an intact state', 'a symbolic link', (p: string) => symlink(newest, p)],
  ])('falls back from the newest name holding %s to the backup, and says why', async (_what, kind, make) => {
    const before = await readFile(newest);
    const b = await select('default', (data) => make(join(data, 'upperfs.squashfs')));
    const why = `upperfs.squashfs is ${kind}, not a state image`;
    expect(b).toMatchObject({ used: 'backup', state_id: 'id-backup', fallback: why });
    expect(b.console).toContain(`warning: ${why}; booting the backup (upperfs-backup.squashfs) instead`);
    expect(await readFile(newest)).toEqual(before);
  });

  it('boots clean when the backup asked for is a directory, as for a damaged backup', async () => {
    const b = await select('backup', async (data) => {
      await copyFile(newest, join(data, 'upperfs.squashfs'));
      await rm(join(data, 'upperfs-backup.squashfs'));
      await mkdir(join(data, 'upperfs-backup.squashfs'));
    });
    expect(b).toMatchObject({ used: 'clean', state_id: '', fallback: 'upperfs-backup.squashfs is a directory, not a state image' });
  });

  it('falls back from an older generation that is a symbolic link to clean', async () => {
    const b = await select('gen-1', (data) => symlink(newest, join(data, 'upperfs-gen-1.squashfs')));
    expect(b).toMatchObject({ used: 'clean', fallback: 'upperfs-gen-1.squashfs is a symbolic link, not a state image' });
  });
});
