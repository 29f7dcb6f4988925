import { describe, expect, it } from 'vitest';
import { badRemovalPath, decodeRemovals, encodeRemovals, mapParent, planDelta, REMOVALS_ALIGN, type PlanInput } from '../../src/checkpoint/plan.js';
import { SEAL } from '../../src/names.js';
import type { Entry } from '../../src/save/tree.js';
import { Cksum, decodeSeal, encodeSeal, type Seal } from '../../src/state/seal.js';

const SINCE = 1_000_000;
const OLD = SINCE - 5000;
const NEW = SINCE + 5000;
let nextIno = 100;

function entry(type: Entry['type'], extra: Partial<Entry> = {}): Entry {
  return { type, mode: type === 'dir' ? 0o755 : 0o644, uid: 0, gid: 0, size: 0, allocated: 0, rdev: 0, ino: nextIno++, nlink: 1, ctimeMs: OLD, mtimeMs: OLD, ...extra };
}
const dir = (extra: Partial<Entry> = {}) => entry('dir', extra);
const file = (size: number, extra: Partial<Entry> = {}) => entry('file', { size, ...extra });

/** A parent tree and the upper layer made from it by CHANGE; both as walks keyed like tree.ts. */
function scenario(
  parent: Record<string, Entry>,
  change: (upper: Map<string, Entry>) => void,
  xattrs: { parent?: Record<string, Record<string, string>>; upper?: Record<string, Record<string, string>> } = {},
  keepCtimes = false,
): PlanInput {
  const p = new Map<string, Entry>([['', dir()], ...Object.entries(parent)]);
  const u = new Map([...p].map(([k, v]) => [k, { ...v }]));
  change(u);
  // As the kernel does: any change to an entry (data, metadata, links,
  // xattrs) sets its ctime, and adding or removing a name sets its
  // directory's, unless the test says the clock lied (keepCtimes).
  const moved = (a: Entry, b: Entry) => JSON.stringify({ ...a, ctimeMs: 0 }) !== JSON.stringify({ ...b, ctimeMs: 0 });
  const xattrsOf = (o: Record<string, Record<string, string>> | undefined, rel: string) => JSON.stringify(o?.[rel] ?? {});
  for (const [rel, e] of u) {
    const before = p.get(rel);
    if (!keepCtimes && before && (moved(e, before) || xattrsOf(xattrs.upper, rel) !== xattrsOf(xattrs.parent, rel))) e.ctimeMs = Math.max(e.ctimeMs, NEW);
  }
  // Adding or removing a name sets its directory's ctime.
  const dirOf = (rel: string) => rel.slice(0, Math.max(0, rel.lastIndexOf('/')));
  for (const rel of new Set([...p.keys(), ...u.keys()])) {
    if (rel && p.has(rel) !== u.has(rel) && u.has(dirOf(rel))) u.get(dirOf(rel))!.ctimeMs = Math.max(u.get(dirOf(rel))!.ctimeMs, NEW);
  }
  const xmap = (o: Record<string, Record<string, string>> = {}) => new Map(Object.entries(o).map(([k, v]) => [k, new Map(Object.entries(v))]));
  return { upper: u, parent: mapParent(p), upperXattrs: xmap(xattrs.upper), parentXattrs: xmap(xattrs.parent), contentsSinceMs: SINCE };
}

const base = (): Record<string, Entry> => ({
  home: dir(),
  'home/u': dir(),
  'home/u/a': file(5),
  'home/u/b': file(7),
  'home/u/docs': dir(),
  'home/u/docs/x': file(1),
  'home/u/docs/y': file(2),
  etc: dir(),
  'etc/conf': file(3),
  'etc/link': entry('symlink', { target: 'conf' }),
});

function plan(input: PlanInput) {
  const p = planDelta(input);
  return { include: [...p.include].sort(), changed: [...p.changed].sort(), removals: p.removals };
}

describe('planning a delta', () => {
  it('holds nothing when nothing changed, whatever the ctimes of directories', () => {
    const p = plan(scenario(base(), (u) => void (u.get('home/u')!.ctimeMs = NEW)));
    expect(p).toEqual({ include: [''], changed: [], removals: [] });
  });

  it('takes a new file with the directories above it, and removes nothing for it', () => {
    const p = plan(scenario(base(), (u) => u.set('home/u/new', file(3, { ctimeMs: NEW }))));
    expect(p).toEqual({ include: ['', 'home', 'home/u', 'home/u/new'], changed: ['home/u/new'], removals: [] });
  });

  it('rewrites a file whose contents changed (its ctime), and one changed and changed back', () => {
    const p = plan(scenario(base(), (u) => void (u.get('home/u/a')!.ctimeMs = NEW)));
    expect(p.changed).toEqual(['home/u/a']);
    expect(p.removals).toEqual(['home/u/a']);
  });

  it.each([
    ['mode', { mode: 0o600 }],
    ['owner', { uid: 1000 }],
    ['group', { gid: 1000 }],
    ['size', { size: 99 }],
    ['modification time', { mtimeMs: OLD - 10_000 }],
  ])('rewrites a file whose %s changed (the kernel set its ctime)', (_what, change) => {
    const p = plan(scenario(base(), (u) => Object.assign(u.get('etc/conf')!, change)));
    expect(p.changed).toEqual(['etc/conf']);
    expect(p.removals).toEqual(['etc/conf']);
  });

  it('never looks again at an entry whose ctime is older than the parent: it holds what the parent holds', () => {
    const p = plan(scenario(base(), (u) => Object.assign(u.get('etc/conf')!, { mode: 0o600 }), {}, true));
    expect(p).toEqual({ include: [''], changed: [], removals: [] });
  });

  it('takes an entry the parent lacks whatever its ctime says, when its directory changed (a clock set back)', () => {
    const p = plan(scenario(base(), (u) => u.set('home/u/old-looking', file(3)), {}, false));
    expect(p.changed).toEqual(['home/u/old-looking']);
    expect(p.removals).toEqual([]);
  });

  it('rewrites a file whose xattrs changed', () => {
    const p = plan(scenario(base(), () => {}, { upper: { 'etc/conf': { 'user.k': '0x01' } } }));
    expect(p.changed).toEqual(['etc/conf']);
    expect(p.removals).toEqual(['etc/conf']);
  });

  it('rewrites a symlink with a new target, and takes new symlinks, fifos and devices', () => {
    const p = plan(
      scenario(base(), (u) => {
        u.get('etc/link')!.target = 'elsewhere';
        u.set('etc/fifo', entry('fifo', { ctimeMs: NEW }));
        u.set('etc/null', entry('char', { rdev: 0x103, ctimeMs: NEW }));
        u.set('etc/disk', entry('block', { rdev: 0x800, ctimeMs: NEW }));
        u.set('etc/new-link', entry('symlink', { target: 'conf', ctimeMs: NEW }));
      }),
    );
    expect(p.changed).toEqual(['etc/disk', 'etc/fifo', 'etc/link', 'etc/new-link', 'etc/null']);
    expect(p.removals).toEqual(['etc/link']);
  });

  it('removes a removed file, and only the top of a removed tree', () => {
    const p = plan(
      scenario(base(), (u) => {
        u.delete('home/u/b');
        for (const k of ['home/u/docs', 'home/u/docs/x', 'home/u/docs/y']) u.delete(k);
      }),
    );
    expect(p).toEqual({ include: [''], changed: [], removals: ['home/u/b', 'home/u/docs'] });
  });

  it('removes the old path of a rename and takes the new one', () => {
    const p = plan(
      scenario(base(), (u) => {
        const a = u.get('home/u/a')!;
        u.delete('home/u/a');
        u.set('home/u/renamed', { ...a, ctimeMs: NEW });
      }),
    );
    expect(p.changed).toEqual(['home/u/renamed']);
    expect(p.removals).toEqual(['home/u/a']);
  });

  it('turns a file into a whiteout (a base file deleted) and a whiteout back into a file', () => {
    const p = plan(
      scenario({ ...base(), 'etc/gone': entry('char', { rdev: 0 }) }, (u) => {
        u.set('etc/conf', entry('char', { rdev: 0, ctimeMs: NEW }));
        u.set('etc/gone', file(4, { ctimeMs: NEW }));
      }),
    );
    expect(p.changed).toEqual(['etc/conf', 'etc/gone']);
    expect(p.removals).toEqual(['etc/conf', 'etc/gone']);
  });

  it('re-adds whole a directory made opaque, the unchanged entries in it too', () => {
    const p = plan(scenario(base(), () => {}, { upper: { 'home/u/docs': { 'trusted.overlay.opaque': '0x79' } } }));
    expect(p.changed).toEqual(['home/u/docs', 'home/u/docs/x', 'home/u/docs/y']);
    expect(p.removals).toEqual(['home/u/docs']);
  });

  it('re-adds whole a directory whose mode or owner changed', () => {
    for (const change of [{ mode: 0o700 }, { uid: 5 }]) {
      const p = plan(scenario(base(), (u) => Object.assign(u.get('home/u/docs')!, change)));
      expect(p.changed).toEqual(['home/u/docs', 'home/u/docs/x', 'home/u/docs/y']);
      expect(p.removals).toEqual(['home/u/docs']);
    }
  });

  it('handles a directory deleted and made again as the entries that differ', () => {
    const p = plan(
      scenario(base(), (u) => {
        u.set('home/u/docs', dir({ ctimeMs: NEW, ino: 999 }));
        u.delete('home/u/docs/y');
        u.set('home/u/docs/x', file(1, { ctimeMs: NEW }));
      }),
    );
    expect(p.changed).toEqual(['home/u/docs/x']);
    expect(p.removals).toEqual(['home/u/docs/x', 'home/u/docs/y']);
  });

  it('changes a type: a file made a directory takes all it holds, a directory made a file drops all it held', () => {
    const p = plan(
      scenario(base(), (u) => {
        u.set('etc/conf', dir({ ctimeMs: NEW }));
        u.set('etc/conf/inside', file(1, { ctimeMs: NEW }));
        for (const k of ['home/u/docs/x', 'home/u/docs/y']) u.delete(k);
        u.set('home/u/docs', file(1, { ctimeMs: NEW }));
      }),
    );
    expect(p.changed).toEqual(['etc/conf', 'etc/conf/inside', 'home/u/docs']);
    expect(p.removals).toEqual(['etc/conf', 'home/u/docs']);
  });

  it('brings a hard-link group whole: a link added to an old file takes and rewrites the old name too', () => {
    // The kernel sets the old inode's ctime when it gains a link.
    const p = plan(
      scenario(base(), (u) => {
        const a = u.get('home/u/a')!;
        a.nlink = 2;
        u.set('home/u/docs/a-too', { ...a });
      }),
    );
    expect(p.changed).toEqual(['home/u/a', 'home/u/docs/a-too']);
    expect(p.removals).toEqual(['home/u/a']);
  });

  it('brings a group whole when one name is in a directory re-added whole, the other outside it', () => {
    const shared = file(4, { nlink: 2, ino: 4242 });
    const p = plan(scenario({ ...base(), 'home/u/docs/in': shared, 'home/u/out': { ...shared } }, (u) => void (u.get('home/u/docs')!.mode = 0o700)));
    expect(p.changed).toContain('home/u/out');
    expect(p.removals).toEqual(['home/u/docs', 'home/u/out']);
  });

  it('rewrites a name whose group changed', () => {
    const shared = file(4, { nlink: 2, ino: 4343 });
    const p = plan(scenario({ ...base(), 'home/u/l1': shared, 'home/u/l2': { ...shared } }, (u) => {
      u.delete('home/u/l2');
      u.get('home/u/l1')!.nlink = 1;
    }));
    expect(p.changed).toEqual(['home/u/l1']);
    expect(p.removals).toEqual(['home/u/l1', 'home/u/l2']);
  });

  it('leaves out an unchanged entry with a newline in its name beside a changed one: an exclude line names it exactly', () => {
    const p = plan(
      scenario({ ...base(), 'home/u/odd\nname': file(3) }, (u) => u.set('home/u/new', file(1, { ctimeMs: NEW }))),
    );
    expect(p.changed).toEqual(['home/u/new']);
    expect(p.removals).toEqual([]);
  });

  it('takes an unchanged entry whose path no exclude line can hold (thousands of bytes, mostly newlines) beside a changed one', () => {
    const deep = `home/u/${Array.from({ length: 8 }, () => '\n'.repeat(250)).join('/')}`;
    const parts = deep.split('/');
    const dirs = Object.fromEntries(parts.slice(2).map((_, i) => [parts.slice(0, i + 3).join('/'), dir()]));
    const p = plan(scenario({ ...base(), ...dirs, [`${deep}/old`]: file(3) }, (u) => u.set(`${deep}/new`, file(1, { ctimeMs: NEW }))));
    expect(p.changed).toEqual([`${deep}/new`, `${deep}/old`]);
    expect(p.removals).toEqual([`${deep}/old`]);
  });
});

describe('the removal list', () => {
  const odd = [
    'home/u/with\nnewline',
    'home/u/with space',
    'home/u/-rf',
    '--',
    Buffer.from([0x6e, 0xff, 0xfe, 0x80]).toString('latin1'),
    'x'.repeat(255),
    Array.from({ length: 200 }, (_, i) => `d${i}`).join('/'),
  ];

  it('keeps every path as its bytes, NUL-ended and padded to a block', () => {
    const encoded = encodeRemovals(odd);
    expect(encoded.length % REMOVALS_ALIGN).toBe(0);
    expect(encoded.subarray(0, 20).toString('latin1')).toBe('home/u/with\nnewline\0');
    expect(decodeRemovals(encoded)).toEqual(odd);
    expect(encodeRemovals([]).length).toBe(0);
    expect(decodeRemovals(Buffer.alloc(REMOVALS_ALIGN))).toEqual([]);
  });

  it.each(['', '/etc/passwd', 'a/../../etc', '../x', './a', 'a/./b', 'a//b', 'a/', 'a\0b'])('refuses %j', (bad) => {
    expect(badRemovalPath(bad)).toBeDefined();
    expect(() => encodeRemovals([bad])).toThrow(/removal list path/);
  });

  it('refuses to read a list holding such a path', () => {
    expect(() => decodeRemovals(Buffer.from('ok\0/abs\0', 'latin1'))).toThrow(/leading \//);
    expect(() => decodeRemovals(Buffer.from('a\0\0b\0', 'latin1'))).toThrow(/empty path/);
  });
});

describe('a delta seal', () => {
  const seal: Seal = {
    kind: 'delta',
    size: 8192,
    sha256: 'a'.repeat(64),
    id: 'link-3',
    parent: 'link-2',
    session: 'boot-1',
    created: 1_800_000_000,
    files: 12,
    space: 4096,
    removed: 4096,
    chain: ['base', 'link-1', 'link-2'],
  };

  it('has its own magic line and its fields, and a cksum_fix that makes the whole file cksum to the constant', () => {
    const image = Buffer.alloc(8192, 7);
    const imageCksum = new Cksum().update(image).digest();
    const block = encodeSeal(seal, { imageCksum });
    const text = block.toString('latin1');
    expect(text.startsWith(`${SEAL.deltaMagic}\n`)).toBe(true);
    expect(text).toContain('\nremoved=4096\nchain=base,link-1,link-2\ncksum_fix=');
    expect(new Cksum().update(image).update(block).digest()).toBe(SEAL.cksum);
    expect(decodeSeal(block, { deltas: true })).toMatchObject({ ...seal, cksumFix: expect.stringMatching(/^[01]{32}$/) });
  });

  it('is refused as a state by every reader that does not ask for deltas', () => {
    const block = encodeSeal(seal, { imageCksum: 0 });
    expect(decodeSeal(block)).toEqual({ problem: expect.stringMatching(/checkpoint delta, not a whole state/) });
  });

  it('leaves a state\'s seal a state\'s', () => {
    const state = encodeSeal({ ...seal, kind: undefined, removed: undefined, chain: undefined });
    expect(state.toString('latin1').startsWith(`${SEAL.magic}\n`)).toBe(true);
    expect(state.toString('latin1')).not.toContain('chain=');
    expect(decodeSeal(state, { deltas: true })).not.toHaveProperty('kind');
  });

  it('refuses a chain that does not end with the parent, and a removal list as long as the delta', () => {
    expect(() => encodeSeal({ ...seal, chain: ['base', 'link-1'] })).toThrow(/parent is the last link/);
    expect(() => encodeSeal({ ...seal, removed: 8192 })).toThrow(/removal list/);
    const good = encodeSeal(seal, { imageCksum: 0 }).toString('latin1');
    const swap = (from: string, to: string) => decodeSeal(Buffer.from(good.replace(from, to), 'latin1'), { deltas: true });
    expect(swap('chain=base,link-1,link-2', 'chain=base,link-1,link-x')).toEqual({ problem: expect.stringMatching(/no valid chain/) });
    expect(swap('removed=4096', 'removed=8192')).toEqual({ problem: expect.stringMatching(/no valid removed/) });
    expect(decodeSeal(encodeSeal(seal), { deltas: true })).toEqual({ problem: expect.stringMatching(/no cksum_fix/) });
  });
});
