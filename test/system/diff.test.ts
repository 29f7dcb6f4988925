import { execa } from 'execa';
import { chmod, chown, link, mkdir, readFile, rename, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { statSync, utimesSync, writeFileSync } from 'node:fs';
import { uptime } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, requireSystem, Scratch } from '../helpers/system.js';

interface DiffJson {
  since: string;
  added: number;
  changed: number;
  removed: number;
  changes: { kind: string; path: string; what: string[] }[];
}

/**
 * `cairn diff` on a real session: a state saved, unpacked by unsquashfs into
 * a fresh upper layer on tmpfs and on ext4 (as zram's is), a real overlayfs
 * over a base, changes of every kind made through the overlay.
 */
describe.each(['tmpfs', 'ext4'] as const)('cairn diff over an upper layer on %s', (fs) => {
  const s = new Scratch();
  let lower: string;
  let data: string;
  let upper: string;
  let merged: string;
  let record: string;
  const m = (p: string) => join(merged, p);
  const system = () => ['--upper', upper, '--data', data, '--boot-record', record];
  const diff = async (): Promise<DiffJson> => {
    const r = await cairn(['diff', ...system(), '--lower', lower, '--json']);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    return JSON.parse(r.stdout) as DiffJson;
  };

  beforeAll(async () => {
    requireSystem();
    lower = s.path('lower');
    for (const d of ['etc/conf.d', 'opt/app/lib', 'usr/share/doc', 'tmp']) await mkdir(join(lower, d), { recursive: true });
    await writeFile(join(lower, 'etc/hostname'), 'base\n');
    await writeFile(join(lower, 'etc/motd'), 'welcome\n');
    await writeFile(join(lower, 'opt/app/lib/a.so'), 'a\n');
    await writeFile(join(lower, 'opt/app/readme'), 'app\n');
    await writeFile(join(lower, 'usr/share/doc/base'), 'doc\n');
    await mkdir(join(lower, 'srv/site/css'), { recursive: true });
    await writeFile(join(lower, 'srv/site/index.html'), 'site\n');
    await writeFile(join(lower, 'srv/site/css/main.css'), 'css\n');

    // The state the session boots from, saved from a first session.
    const first = await s.overlay(lower, 'first');
    const f = (p: string) => join(first.merged, p);
    await mkdir(f('home/user/docs'), { recursive: true });
    await writeFile(f('home/user/docs/notes'), 'notes\n');
    await writeFile(f('home/user/same-size'), 'aaaa\n');
    await writeFile(f('home/user/linked'), 'one inode\n');
    await writeFile(f('home/user/to-rename'), 'renamed\n');
    await writeFile(f('home/user/owned'), 'owner\n');
    await writeFile(f('home/user/xattr'), 'x\n');
    await symlink('docs/notes', f('home/user/shortcut'));
    await writeFile(f('etc/hostname'), 'first\n');
    await rm(f('etc/motd'));
    data = await s.dataPartition();
    const saved = await cairn(['save', '--upper', first.upper, '--data', data, '--progress', 'none']);
    expect(saved.stderr).toBe('');
    await s.unmount(first.merged);

    // The boot: the state unpacked into a fresh upper layer, the record written after it.
    const rw = s.path(`rw-${fs}`);
    if (fs === 'tmpfs') {
      await mkdir(rw);
      await execa('mount', ['-t', 'tmpfs', 'tmpfs', rw]);
    } else {
      const image = s.path('rw.img');
      await execa('truncate', ['-s', '128M', image]);
      await execa('mkfs.ext4', ['-q', '-F', image]);
      await mkdir(rw);
      await execa('mount', ['-o', 'loop', image, rw]);
    }
    upper = join(rw, 'upper');
    // unsquashfs as the boot runs it; the ACL record it leaves at the root (the boot sets and removes it) is not the user's.
    await execa('unsquashfs', ['-f', '-no-progress', '-d', upper, join(data, 'upperfs.squashfs')]);
    const status = JSON.parse((await cairn(['status', '--data', data, '--quick', '--json'])).stdout) as { states: { id: string }[] };
    const runDir = s.path(`run-${fs}`);
    await mkdir(runDir);
    record = join(runDir, 'boot');
    await writeFile(
      record,
      `requested=default\nused=default\nstate_id=${status.states[0]!.id}\nupper=${fs}\n` +
        `unpacked_at=${Math.floor(Date.now() / 1000)}\nunpacked_uptime=${uptime().toFixed(2)}\n`,
    );
    await mkdir(join(rw, 'work'));
    merged = s.path(`merged-${fs}`);
    await mkdir(merged);
    await execa('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${join(rw, 'work')}`, merged]);
    // ctimes carry whole seconds on some file systems: changes come a second after the unpack.
    await new Promise((r) => setTimeout(r, 1100));
  });
  afterAll(async () => {
    await execa('umount', ['-l', merged], { reject: false });
    await execa('umount', ['-l', s.path(`rw-${fs}`)], { reject: false });
    await s.cleanup();
  });

  it('lists nothing right after the boot', async () => {
    const d = await diff();
    expect(d.changes).toEqual([]);
    expect(d.since).toBe('the boot (default)');
  });

  it('lists every kind of change made through the overlay', async () => {
    await writeFile(m('home/user/new'), 'new\n');
    await mkdir(m('home/user/new-dir'));
    await writeFile(m('home/user/new-dir/f'), 'f\n');
    await writeFile(m('etc/conf.d/net'), 'dhcp\n'); // new in a base directory
    await writeFile(m('usr/share/doc/base'), 'changed base file\n'); // a base file copied up
    await rm(m('opt/app/readme')); // a base file removed: a whiteout
    await rm(m('home/user/docs'), { recursive: true }); // a saved directory removed
    await rm(m('opt/app/lib'), { recursive: true }); // a base directory removed and made again: opaque
    await mkdir(m('opt/app/lib'));
    await writeFile(m('opt/app/lib/b.so'), 'b\n');
    await rename(m('home/user/to-rename'), m('home/user/renamed'));
    await link(m('home/user/linked'), m('home/user/linked-too')); // a hard link added to an old file
    const sameSize = m('home/user/same-size');
    const { mtime } = statSync(sameSize);
    await writeFile(sameSize, 'bbbb\n');
    await utimes(sameSize, mtime, mtime); // only the contents tell
    await chown(m('home/user/owned'), 1000, 1000);
    await execa('setfattr', ['-n', 'user.tag', '-v', 'blue', m('home/user/xattr')]);
    await rm(m('home/user/shortcut'));
    await symlink('renamed', m('home/user/shortcut'));
    await writeFile(m('etc/motd'), 'back again\n'); // over a saved whiteout
    await writeFile(m('tmp/scratch'), 'never saved\n'); // excluded

    const d = await diff();
    expect(d.changes.map((c) => `${c.kind} ${c.path}`)).toEqual(expected());
    expect(Object.fromEntries(d.changes.map((c) => [c.path, c.what]))).toMatchObject({
      'home/user/owned': ['owner'],
      'home/user/xattr': ['xattrs'],
      'home/user/same-size': ['contents'],
      'home/user/shortcut': ['link target'],
      'opt/app/lib/': ['made opaque'],
      'opt/app/lib/a.so': ['hidden by an opaque directory'],
      'opt/app/readme': ['whiteout'],
      'usr/share/doc/base': ['changed from the base'],
    });
  });

  it('after a save, lists only a change made while the save ran', async () => {
    const save = execa(process.execPath, ['dist/cairn.mjs', 'save', ...system(), '--progress', 'lines'], { reject: false, stdin: 'ignore' });
    let changedDuringSave = false;
    save.stderr!.on('data', (chunk: Buffer) => {
      if (!changedDuringSave && chunk.toString().includes('sealing')) {
        changedDuringSave = true;
        // Verified a moment ago, changed before the save ends: same size, time put back.
        const p = m('home/user/new');
        const st = statSync(p);
        writeFileSync(p, 'NEW\n');
        utimesSync(p, st.atime, st.mtime);
      }
    });
    const r = await save;
    expect(r.stderr).toContain('sealing');
    expect(r.exitCode).toBe(0);
    expect(changedDuringSave).toBe(true);
    expect(await readFile(join(record, '..', 'saved'), 'utf8')).toMatch(/^state_id=/);
    const d = await diff();
    expect(d.since).toMatch(/^the save at /);
    expect(d.changes).toEqual([{ kind: 'M', path: 'home/user/new', what: ['contents'] }]);
  });

  it('cairn status says how much is unsaved', async () => {
    await chmod(m('home/user/renamed'), 0o600);
    const r = await cairn(['status', ...system()]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^changed since the save at .*: 0 added, 2 changed, 0 removed, 4 B \(cairn diff lists them\)$/m);
  });

  it('after a checkpoint, lists what a base directory removed and made again hides, as since a save', async () => {
    const cp = await cairn(['checkpoint', ...system(), '--progress', 'none']);
    expect(cp.exitCode, cp.stderr).toBe(0);
    expect(cp.stdout).toMatch(/checkpoint/);
    expect((await diff()).changes).toEqual([]);
    await rm(m('srv/site'), { recursive: true });
    await mkdir(m('srv/site'));
    await writeFile(m('srv/site/index.html'), 'a new site\n');
    const d = await diff();
    expect(d.changes.map((c) => `${c.kind} ${c.path} ${c.what.join(',')}`)).toEqual([
      'M srv/site/ made opaque',
      'D srv/site/css/ hidden by an opaque directory',
      'D srv/site/css/main.css hidden by an opaque directory',
      'M srv/site/index.html changed from the base',
    ]);
  });
});

/** What the changes of the second test come to, in the order of paths. */
function expected(): string[] {
  return [
    'A etc/conf.d/net',
    'A etc/motd',
    'D home/user/docs/',
    'D home/user/docs/notes',
    'A home/user/linked-too',
    'A home/user/new',
    'A home/user/new-dir/',
    'A home/user/new-dir/f',
    'M home/user/owned',
    'A home/user/renamed',
    'M home/user/same-size',
    'M home/user/shortcut',
    'D home/user/to-rename',
    'M home/user/xattr',
    'M opt/app/lib/',
    'D opt/app/lib/a.so',
    'A opt/app/lib/b.so',
    'D opt/app/readme',
    'M usr/share/doc/base',
  ];
}
