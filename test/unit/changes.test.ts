import { execa } from 'execa';
import { mkdtempSync } from 'node:fs';
import { chmod, link, mkdir, rename, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { computeChanges, type ChangeSet } from '../../src/changes/changes.js';
import { compileExcludes } from '../../src/save/exclude.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const listed = (set: ChangeSet) => set.changes.map((c) => `${c.kind} ${c.path}`);

/**
 * The change set between an upper layer and the baseline it was filled from.
 * The baseline is a directory here (a mounted state at run time); the upper
 * layer is its copy with times kept, as unsquashfs leaves it, and the
 * baseline's moment is taken after the copy, as the boot record's is.
 */
describe('computeChanges', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-changes-'));
  const base = join(dir, 'base');
  const upper = join(dir, 'upper');
  const lower = join(dir, 'lower');
  const u = (p: string) => join(upper, p);
  let since = 0;
  let set: ChangeSet;

  beforeAll(async () => {
    await mkdir(join(base, 'etc/conf.d'), { recursive: true });
    await mkdir(join(base, 'home/user/old-dir/deep'), { recursive: true });
    await mkdir(join(base, 'home/user/recreated'), { recursive: true });
    await mkdir(join(base, 'home/user/moved-dir'), { recursive: true });
    await mkdir(join(base, 'tmp'), { recursive: true });
    await writeFile(join(base, 'etc/hostname'), 'stick\n');
    await writeFile(join(base, 'etc/conf.d/net'), 'dhcp\n');
    await writeFile(join(base, 'etc/removed'), 'gone soon\n');
    await writeFile(join(base, 'etc/same-size'), 'aaaa\n');
    await writeFile(join(base, 'etc/changed-back'), 'original\n');
    await writeFile(join(base, 'etc/touched-back'), 'original\n');
    await writeFile(join(base, 'etc/mode'), 'x\n');
    await writeFile(join(base, 'etc/xattr'), 'x\n');
    await writeFile(join(base, 'etc/linked'), 'one inode\n');
    await link(join(base, 'etc/linked'), join(base, 'etc/linked-too'));
    await writeFile(join(base, 'etc/old'), 'an old file\n');
    await writeFile(join(base, 'home/user/old-dir/deep/f'), 'deep\n');
    await writeFile(join(base, 'home/user/recreated/a'), 'a\n');
    await writeFile(join(base, 'home/user/moved-dir/inside'), 'in\n');
    await writeFile(join(base, 'home/user/renamed'), 'rename me\n');
    await symlink('hostname', join(base, 'etc/link'));
    // Times as squashfs keeps them: whole seconds, a while ago.
    await execa('find', [base, '-exec', 'touch', '-h', '-d', '@1700000000', '{}', '+']);
    await execa('cp', ['-a', base, upper]);
    await sleep(20);
    since = Date.now();
    await sleep(20);

    await writeFile(u('etc/new'), 'new file\n');
    await mkdir(u('home/user/new-dir/sub'), { recursive: true });
    await writeFile(u('home/user/new-dir/sub/file'), 'nested\n');
    await rm(u('etc/removed'));
    await rm(u('home/user/old-dir'), { recursive: true });
    await rename(u('home/user/renamed'), u('home/user/renamed-to'));
    await rename(u('home/user/moved-dir'), u('home/user/moved-to'));
    await rm(u('home/user/recreated'), { recursive: true });
    await mkdir(u('home/user/recreated'));
    await writeFile(u('home/user/recreated/b'), 'b\n');
    await chmod(u('home/user/recreated'), 0o700);
    await link(u('etc/old'), u('etc/old-link'));
    // A hard link broken: a copy takes one of the two names.
    await rm(u('etc/linked-too'));
    await writeFile(u('etc/linked-too'), 'one inode\n');
    await utimes(u('etc/linked-too'), 1700000000, 1700000000);
    // Same size, other bytes, modification time put back: only the contents tell.
    await writeFile(u('etc/same-size'), 'bbbb\n');
    await utimes(u('etc/same-size'), 1700000000, 1700000000);
    // Changed and changed back with the time put back too: nothing a save would store differs.
    await writeFile(u('etc/changed-back'), 'changed\n');
    await writeFile(u('etc/changed-back'), 'original\n');
    await utimes(u('etc/changed-back'), 1700000000, 1700000000);
    // Changed back, the modification time left new: a save stores that time.
    await writeFile(u('etc/touched-back'), 'changed\n');
    await writeFile(u('etc/touched-back'), 'original\n');
    await chmod(u('etc/mode'), 0o600);
    await execa('setfattr', ['-n', 'user.tag', '-v', 'blue', u('etc/xattr')]);
    await rm(u('etc/link'));
    await symlink('conf.d/net', u('etc/link'));
    await writeFile(u('tmp/scratch'), 'excluded\n');

    set = await computeChanges({ upperRoot: upper, baselineRoot: base, contentsSinceMs: since, exclude: compileExcludes(['tmp/*']) });
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('lists added, changed and removed paths, and nothing else', () => {
    expect(listed(set)).toEqual([
      'M etc/link',
      'M etc/linked-too',
      'M etc/mode',
      'A etc/new',
      'A etc/old-link',
      'D etc/removed',
      'M etc/same-size',
      'M etc/touched-back',
      'M etc/xattr',
      'A home/user/moved-to/',
      'A home/user/moved-to/inside',
      'A home/user/new-dir/',
      'A home/user/new-dir/sub/',
      'A home/user/new-dir/sub/file',
      'D home/user/old-dir/',
      'D home/user/old-dir/deep/',
      'D home/user/old-dir/deep/f',
      'M home/user/recreated/',
      'D home/user/recreated/a',
      'A home/user/recreated/b',
      'A home/user/renamed-to',
      'D home/user/moved-dir/',
      'D home/user/moved-dir/inside',
      'D home/user/renamed',
    ].sort((a, b) => (a.slice(2) < b.slice(2) ? -1 : 1)));
    expect(set).toMatchObject({ added: 9, changed: 7, removed: 8 });
  });

  it('says what differs', () => {
    const what = Object.fromEntries(set.changes.map((c) => [c.path, c.what]));
    expect(what['etc/link']).toEqual(['link target']);
    expect(what['etc/mode']).toEqual(['mode']);
    expect(what['etc/xattr']).toEqual(['xattrs']);
    expect(what['etc/same-size']).toEqual(['contents']);
    expect(what['etc/touched-back']).toEqual(['modification time']);
    expect(what['etc/linked-too']).toEqual(['hard links']);
    expect(what['home/user/recreated/']).toEqual(['mode']);
  });

  it('counts the bytes a save stores anew: new files and rewritten ones', () => {
    // etc/new 9, old-link 12, nested 7, b 2, inside 3, renamed-to 10; same-size 5, touched-back 9; not linked-too, whose contents are the same.
    expect(set.bytes).toBe(9 + 12 + 7 + 2 + 3 + 10 + 5 + 9);
  });

  it('reads the contents of no file changed before the baseline\'s moment', async () => {
    const later = await computeChanges({ upperRoot: upper, baselineRoot: base, contentsSinceMs: Date.now() + 3_600_000, exclude: compileExcludes(['tmp/*']) });
    expect(later.contentsRead).toBe(0);
    // Without their contents read, only the same-size file with its time put back goes unseen.
    expect(listed(later)).toEqual(listed(set).filter((l) => l !== 'M etc/same-size' && l !== 'M etc/touched-back'));
    expect(set.contentsRead).toBeGreaterThan(0);
    expect(set.contentsRead).toBeLessThan(10);
  });

  it('a clean boot has no baseline: everything is added', async () => {
    const clean = await computeChanges({ upperRoot: upper, baselineRoot: undefined, contentsSinceMs: 0 });
    expect(clean.removed).toBe(0);
    expect(clean.changed).toBe(0);
    expect(listed(clean)).toContain('A etc/hostname');
    expect(listed(clean)).toContain('A tmp/scratch');
    expect(clean.added).toBe(clean.changes.length);
  });

  it('with the base system given, a base file copied up is changed, and a directory copied up only to hold it is not listed', async () => {
    await mkdir(join(lower, 'etc'), { recursive: true });
    await writeFile(join(lower, 'etc/new'), 'the base\'s\n');
    await execa('chmod', ['755', join(lower, 'etc')]);
    await execa('chmod', ['755', join(upper, 'etc')]);
    const clean = await computeChanges({ upperRoot: upper, baselineRoot: undefined, contentsSinceMs: 0, lowerRoot: lower });
    expect(clean.changes.find((c) => c.path === 'etc/new')).toMatchObject({ kind: 'M', what: ['changed from the base'] });
    expect(listed(clean)).not.toContain('A etc/');
    expect(listed(clean)).not.toContain('M etc/');
    expect(listed(clean)).toContain('A etc/hostname');
  });
});
