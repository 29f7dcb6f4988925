import { execa } from 'execa';
import { chmod, chown, link, mkdir, open, rename, rm, rmdir, symlink, truncate, writeFile } from 'node:fs/promises';
import { existsSync, lstatSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, catFromImage, manifest, requireSystem, Scratch, unpackAsBoot } from '../helpers/system.js';

/**
 * The whole promise of a save: what the user saw in the merged root comes
 * back exactly after the state is unpacked into a fresh upper layer.
 */
describe('a saved state restores the merged root exactly', () => {
  const s = new Scratch();
  let lower: string;
  let first: { upper: string; merged: string };
  let data: string;
  let restored: string;

  beforeAll(async () => {
    requireSystem();
    lower = s.path('lower');
    await mkdir(join(lower, 'etc/conf.d'), { recursive: true });
    await mkdir(join(lower, 'opt/old/deep'), { recursive: true });
    await mkdir(join(lower, 'tmp'), { recursive: true });
    await writeFile(join(lower, 'etc/hostname'), 'base\n');
    await writeFile(join(lower, 'etc/removed'), 'deleted by the user\n');
    await writeFile(join(lower, 'etc/conf.d/keep'), 'lower\n');
    await writeFile(join(lower, 'opt/old/deep/file'), 'hidden once the dir is recreated\n');
    await writeFile(join(lower, 'opt/old/was-here'), 'also hidden\n');

    first = await s.overlay(lower, 'first');
    const m = (p: string) => join(first.merged, p);
    // Changes made through the overlay, so the kernel writes the upper dir.
    await writeFile(m('etc/hostname'), 'changed\n');
    await rm(m('etc/removed'));
    await rm(m('opt/old'), { recursive: true });
    await mkdir(m('opt/old'));
    await writeFile(m('opt/old/new'), 'fresh\n');
    await mkdir(m('home/user/docs'), { recursive: true });
    await writeFile(m('home/user/docs/notes.txt'), 'notes\n'.repeat(1000));
    await execa('setfattr', ['-n', 'user.tag', '-v', 'blue', m('home/user/docs/notes.txt')]);
    await link(m('home/user/docs/notes.txt'), m('home/user/notes-link'));
    const sparse = await open(m('home/user/sparse.img'), 'w');
    await sparse.write('tail', 64 * 1024 * 1024);
    await sparse.close();
    await execa('mkfifo', [m('home/user/pipe')]);
    await symlink('docs/notes.txt', m('home/user/shortcut'));
    await symlink('/nowhere/at/all', m('home/user/dangling'));
    await writeFile(m('home/user/ünïcødé 文件 ✓.txt'), 'unicode\n');
    await writeFile(m(`home/user/${'L'.repeat(255)}`), 'long name\n');
    await writeFile(m('home/user/big.bin'), Buffer.alloc(3 * 1024 * 1024, 7));
    await execa('mknod', [m('home/user/null-dev'), 'c', '1', '3']);
    await writeFile(m('home/user/setuid'), '#!/bin/sh\n');
    await chmod(m('home/user/setuid'), 0o4755);
    await chown(m('home/user/docs'), 1000, 1000);
    await chown(m('home/user/docs/notes.txt'), 1000, 100);
    await chmod(m('home/user/docs'), 0o750);
    await writeFile(m('tmp/scratch'), 'temporary\n');
    await mkdir(m('etc/later'));
    await rename(m('etc/conf.d/keep'), m('etc/later/kept'));
    await truncate(m('etc/hostname'), 3);

    data = await s.dataPartition();
  });
  afterAll(() => s.cleanup());

  it('saves the upper layer while the overlay is mounted', async () => {
    const r = await cairn(['save', '--upper', first.upper, '--data', data, '--json']);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.image).toBe(join(data, 'upperfs.squashfs'));
    expect(report.files).toBeGreaterThan(20);
  });

  it('only root reads the saved state and lists the data partition; a user still reaches user/', async () => {
    expect(statSync(join(data, 'upperfs.squashfs')).mode & 0o777).toBe(0o600);
    expect(statSync(data).mode & 0o777).toBe(0o711);
    await mkdir(join(data, 'user'), { recursive: true });
    await writeFile(join(data, 'user', 'mine'), 'the user\'s own\n');
    await chown(join(data, 'user'), 1000, 1000);
    await chown(join(data, 'user', 'mine'), 1000, 1000);
    // The scratch directory the data partition is mounted in is made 0700; a stick's /persist sits in /.
    await chmod(s.dir, 0o711);
    const asUser = (cmd: string) => execa('setpriv', ['--reuid', '1000', '--regid', '1000', '--clear-groups', 'sh', '-c', cmd], { reject: false });
    const read = await asUser(`cat '${join(data, 'upperfs.squashfs')}' >/dev/null`);
    expect(read.exitCode).not.toBe(0);
    expect(read.stderr).toMatch(/Permission denied/);
    expect((await asUser(`ls '${data}'`)).stderr).toMatch(/Permission denied/);
    expect((await asUser(`cat '${join(data, 'user', 'mine')}'`)).stdout).toBe('the user\'s own');
  });

  it('keeps whiteouts as character devices 0/0 and the opaque dir xattr in the image', async () => {
    const image = join(data, 'upperfs.squashfs');
    const unpacked = s.path('unpacked');
    await execa('unsquashfs', ['-d', unpacked, image]);
    const wh = lstatSync(join(unpacked, 'etc/removed'));
    expect(wh.isCharacterDevice()).toBe(true);
    expect(wh.rdev).toBe(0);
    const opaque = await execa('getfattr', ['--only-values', '-n', 'trusted.overlay.opaque', join(unpacked, 'opt/old')]);
    expect(opaque.stdout).toBe('y');
    expect(await catFromImage(image, 'opt/old/new')).toBe('fresh');
  });

  it('unpacked into a fresh upper layer, the merged root is the same as before', async () => {
    restored = s.path('restored');
    await mkdir(restored);
    await unpackAsBoot(join(data, 'upperfs.squashfs'), join(restored, 'upper'));
    const second = await s.overlay(lower, 'restored-ovl');
    await rmdir(second.upper);
    await s.unmount(second.merged);
    await execa('mv', [join(restored, 'upper'), second.upper]);
    await execa('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${second.upper},workdir=${second.work}`, second.merged]);
    try {
      const isExcluded = (rel: string) => rel.startsWith('tmp/');
      const before = await manifest(first.merged, isExcluded);
      const after = await manifest(second.merged, isExcluded);
      expect([...after.entries()]).toEqual([...before.entries()]);
      // What the user deleted stays deleted; a recreated dir hides the old one.
      expect(existsSync(join(second.merged, 'etc/removed'))).toBe(false);
      expect(existsSync(join(second.merged, 'opt/old/was-here'))).toBe(false);
      expect(existsSync(join(second.merged, 'opt/old/deep'))).toBe(false);
      expect(existsSync(join(second.merged, 'etc/conf.d/keep'))).toBe(false);
      // The sparse file came back sparse-sized, not as 64 MiB of blocks.
      const sparse = lstatSync(join(second.merged, 'home/user/sparse.img'));
      expect(sparse.size).toBe(64 * 1024 * 1024 + 4);
      expect(sparse.blocks * 512).toBeLessThan(1024 * 1024);
      // /tmp is excluded by default: its contents are gone, the dir stays.
      expect(existsSync(join(second.merged, 'tmp/scratch'))).toBe(false);
      expect(existsSync(join(second.merged, 'tmp'))).toBe(true);
    } finally {
      await execa('umount', [second.merged]);
    }
  });

  it('seals the state so that the boot\'s one-read check holds: cksum of the whole file is 0 and its size (docs/state-format.md, cksum_fix)', async () => {
    const state = join(data, 'upperfs.squashfs');
    expect((await execa('tail', ['-c', '4096', state])).stdout).toMatch(/^cksum_fix=[01]{32}$/m);
    expect((await execa('cksum', [state])).stdout).toBe(`0 ${statSync(state).size} ${state}`);
  });

  it('cairn verify accepts the saved image and cairn status lists it as intact', async () => {
    const v = await cairn(['verify', join(data, 'upperfs.squashfs')]);
    expect(v.exitCode).toBe(0);
    expect(v.stdout).toMatch(/intact/);
    const st = await cairn(['status', '--data', data, '--json']);
    expect(st.exitCode).toBe(0);
    const status = JSON.parse(st.stdout);
    expect(status.states).toHaveLength(1);
    expect(status.states[0]).toMatchObject({ boot: 'default', name: 'upperfs.squashfs', intact: true });
    expect(status.nextDefaultBoot).toBe('default');
  });
});
