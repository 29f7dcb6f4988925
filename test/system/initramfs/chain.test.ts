/**
 * Booting checkpoint chains: a real session on a real overlayfs, three
 * deltas written in turn by the real writer, laid out on a real data
 * partition as the runtime lays them (every link as checkpoints/<id>.squashfs,
 * the tip under a state's name), and booted by the library in busybox sh:
 * find, mount, select, fill, record. The upper layer the boot made is
 * compared with the session's, and the faults of a chain checked: a link
 * damaged or missing in the middle, a missing base, a delta that does not fit.
 */
import { execa } from 'execa';
import { chmod, copyFile, mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeDelta, type DeltaOptions, type DeltaReport } from '../../../src/checkpoint/write.js';
import { DEFAULTS } from '../../../src/config.js';
import { keyValues, requireRoot, requireTools } from '../../helpers/initramfs-env.js';
import { cairn, CLI, manifest, Scratch, unpackAsBoot } from '../../helpers/system.js';
import { readSeal } from '../../../src/state/seal.js';
import { bitFlippedCopy, buildState, dataPartition, Sandbox, truncatedCopy } from './fixtures.js';
import { sealImage } from './seal.js';

const config = { ...DEFAULTS, compression: 'gzip' as const, compressionLevel: 1 };

let sb: Sandbox;
const s = new Scratch();
let base: string;
let baseId: string;
let backup: string;
/** The deltas in order, their ids, and the session's upper layer as of each (the last is the session's own). */
const deltas: string[] = [];
const ids: string[] = [];
const snaps: string[] = [];

beforeAll(async () => {
  requireRoot('loop devices, mounts and overlayfs');
  requireTools(['busybox', 'unshare', 'losetup', 'mkfs.ext4', 'mksquashfs', 'unsquashfs', 'setfattr', 'getfattr', 'findfs']);
  sb = await Sandbox.create('chain');
  backup = sb.path('backup.squashfs');
  await buildState(sb, backup, 'backup', 0, { cksum: true });

  const lower = s.path('lower');
  for (const d of ['etc', 'opt/app']) await mkdir(join(lower, d), { recursive: true });
  await writeFile(join(lower, 'etc/hostname'), 'lower\n');
  await writeFile(join(lower, 'etc/motd'), 'welcome\n');
  await writeFile(join(lower, 'opt/app/old'), 'old\n');
  const data = await s.dataPartition('data', 128);

  // The base: a first session's upper layer, saved whole.
  const first = await s.overlay(lower, 'first');
  const f = (p: string) => join(first.merged, p);
  await mkdir(f('home/user/docs'), { recursive: true });
  await writeFile(f('home/user/docs/notes'), 'notes\n');
  await writeFile(f('home/user/gone'), 'removed by checkpoint 1\n');
  await writeFile(f('home/user/later-gone'), 'removed by checkpoint 3\n');
  await writeFile(f('etc/hostname'), 'base\n');
  await s.unmount(first.merged);
  base = s.path('base.squashfs');
  await execa('mksquashfs', [first.upper, base, '-noappend', '-quiet', '-no-progress', '-xattrs']);
  baseId = (await sealImage(base, {}, { cksum: true })).id;

  // The session booted from it, its changes checkpointed three times.
  const upper = s.path('sess', 'upper');
  await mkdir(upper, { recursive: true });
  await unpackAsBoot(base, upper);
  const unpacked = Date.now();
  const merged = (await s.overlay(lower, 'sess')).merged;
  const m = (p: string) => join(merged, p);
  const baseMount = s.path('base-mnt');
  await mkdir(baseMount);
  await execa('mount', ['-o', 'loop,ro', '-t', 'squashfs', base, baseMount]);
  await new Promise((r) => setTimeout(r, 1100));
  const reports: DeltaReport[] = [];
  const checkpoint = async (parentRoot: string, since: number) => {
    const n = reports.length + 1;
    const options: DeltaOptions = { upperDir: upper, parent: { root: parentRoot }, contentsSinceMs: since, chain: [baseId, ...ids], output: join(data, `delta-${n}`), session: 'test-session', config };
    const report = await writeDelta(options);
    expect(report.written).toBe(true);
    reports.push(report);
    deltas.push(options.output);
    ids.push(report.seal!.id);
    const snap = s.path(`snap-${n}`);
    await execa('cp', ['-a', upper, snap]);
    snaps.push(snap);
  };
  try {
    await writeFile(m('home/user/docs/notes'), 'notes, changed\n');
    await writeFile(m('home/user/added-1'), 'added by checkpoint 1\n');
    await rm(m('home/user/gone'));
    await rm(m('etc/motd')); // a base file: a whiteout
    await rm(m('opt/app'), { recursive: true }); // made again: opaque
    await mkdir(m('opt/app'));
    await writeFile(m('opt/app/fresh'), 'fresh\n');
    await checkpoint(baseMount, unpacked + 500);
    await writeFile(m('home/user/added-2'), 'added by checkpoint 2\n');
    await writeFile(m('home/user/docs/notes'), 'notes, changed twice\n');
    await symlink('docs/notes', m('home/user/shortcut'));
    await checkpoint(snaps[0]!, reports[0]!.startedMs);
    await rm(m('home/user/later-gone'));
    await writeFile(m('etc/hostname'), 'checkpoint 3\n');
    // Large enough not to fit in a small upper layer.
    await execa('sh', ['-c', 'head -c 3145728 /dev/urandom >"$1"', 'sh', m('home/user/blob')]);
    await checkpoint(snaps[1]!, reports[1]!.startedMs);
  } finally {
    await execa('umount', [baseMount], { reject: false });
  }
}, 300_000);

afterAll(async () => {
  await sb?.cleanup();
  await s.cleanup();
});

const link = (id: string) => `checkpoints/${id}.squashfs`;

/** The stick as the runtime leaves it after the third checkpoint: every link under checkpoints/, the tip the newest state. */
function stick(): Record<string, string> {
  return {
    [link(baseId)]: base,
    ...Object.fromEntries(ids.map((id, i) => [link(id), deltas[i]!])),
    'upperfs.squashfs': deltas[2]!,
  };
}

let rootCount = 0;

/**
 * Boots REQUESTED from a data partition holding FILES, into a tmpfs upper
 * layer of UPPER_MIB: the record, what was said, and a copy of the upper
 * layer the boot made (cp -a: owners, xattrs, whiteouts).
 */
async function boot(files: Record<string, string>, requested: string, upperMiB = 64) {
  const part = await dataPartition(sb, files);
  const root = await sb.root(`root-${rootCount}`);
  const copy = sb.path(`upper-${rootCount++}`);
  const r = await sb.lib(
    `
data_find "LABEL=${part.label}" || exit 10
data_mount "$cairn_data_dev" || exit 11
cairn_boot=${requested}
state_select "$cairn_boot"
upper_create tmpfs ${upperMiB << 20} || exit 12
cairn_upper_bytes=${upperMiB << 20}
state_fill || exit 13
record_write || exit 14
cat "$ROOT$CAIRN_BOOT_RECORD"
/usr/bin/cp -a "$ROOT$CAIRN_UPPER_DIR" "$COPY" || exit 15
`,
    { root, env: { COPY: copy } },
  );
  expect(r.exitCode, r.stderr).toBe(0);
  return { record: keyValues(r.stdout), console: r.stderr, upper: copy };
}

/** Every difference a user could see between the upper layers A and B, opaque directories included. */
async function differences(a: string, b: string): Promise<string[]> {
  const [ma, mb] = await Promise.all([manifest(a), manifest(b)]);
  const out: string[] = [];
  for (const [p, d] of ma) if (mb.get(p) !== d) out.push(`${p}: ${d} / ${mb.get(p) ?? 'absent'}`);
  for (const [p, d] of mb) if (!ma.has(p)) out.push(`${p}: absent / ${d}`);
  const opaque = async (dir: string) => (await execa('getfattr', ['--absolute-names', '-n', 'trusted.overlay.opaque', '--only-values', join(dir, 'opt/app')], { reject: false })).stdout;
  const [oa, ob] = await Promise.all([opaque(a), opaque(b)]);
  if (oa !== ob) out.push(`opt/app opaque: ${oa} / ${ob}`);
  return out;
}

describe('booting a checkpoint chain', () => {
  it('boots the base and three checkpoints to exactly the session: files added, changed and removed', async () => {
    const b = await boot({ ...stick(), 'upperfs-backup.squashfs': backup }, 'default');
    expect(b.record).toMatchObject({ requested: 'default', used: 'default', state_id: ids[2], fallback: '', skipped: '', chain: '3', chain_dropped: '' });
    expect(b.console).toContain(`cairn: booting the newest state (upperfs.squashfs), id ${ids[2]}: a base and 3 checkpoints`);
    expect(b.console).not.toMatch(/warning/);
    expect(await differences(snaps[2]!, b.upper)).toEqual([]);
    // The comparison sees what one checkpoint changed: the one before the last differs.
    expect(await differences(snaps[1]!, b.upper)).not.toEqual([]);
    expect(await readFile(join(b.upper, 'etc/hostname'), 'utf8')).toBe('checkpoint 3\n');
    expect(await readFile(join(b.upper, 'home/user/docs/notes'), 'utf8')).toBe('notes, changed twice\n');
  });

  it('still boots a whole state as before, recording no chain', async () => {
    const b = await boot({ 'upperfs.squashfs': base }, 'default');
    expect(b.record).toMatchObject({ used: 'default', state_id: baseId, fallback: '', chain: '0', chain_dropped: '' });
    expect(b.console).toContain(`cairn: booting the newest state (upperfs.squashfs), id ${baseId}\n`);
    expect(await readFile(join(b.upper, 'etc/hostname'), 'utf8')).toBe('base\n');
  });

  it('ends the chain before a damaged middle link: the boot keeps the base and checkpoint 1, says what it dropped, and holds the tip', async () => {
    const flipped = sb.path('flipped-2');
    await bitFlippedCopy(deltas[1]!, flipped, 100);
    const b = await boot({ ...stick(), [link(ids[1]!)]: flipped, 'upperfs-backup.squashfs': backup }, 'default');
    const dropped = `${ids[1]}.squashfs upperfs.squashfs`;
    expect(b.record).toMatchObject({ used: 'default', state_id: ids[0], skipped: ids[2], chain: '1', chain_dropped: dropped });
    expect(b.record.fallback).toBe(
      `upperfs.squashfs: its checkpoint chain ended early, at ${ids[1]}.squashfs fails its checksum (cksum mismatch); booted a base and 1 checkpoint, dropped: ${dropped}`,
    );
    expect(b.console).toContain(`cairn: warning: ${ids[1]}.squashfs fails its checksum (cksum mismatch): the chain ends before it; dropped: ${dropped}`);
    expect(await differences(snaps[0]!, b.upper)).toEqual([]);
  });

  it('ends the chain at the first checkpoint when only its removal list is damaged: its check, run while the base unpacks, finds it before anything of it is applied', async () => {
    const sealed = await readSeal(deltas[0]!, { deltas: true });
    if (!sealed.ok) throw new Error(sealed.problem);
    expect(sealed.seal.removed).toBeGreaterThan(0);
    // The first path of the list, a name that is not in the upper layer: only the cksum tells.
    const flipped = sb.path('flipped-list-1');
    await bitFlippedCopy(deltas[0]!, flipped, sealed.seal.size - sealed.seal.removed!);
    const b = await boot({ ...stick(), [link(ids[0]!)]: flipped, 'upperfs-backup.squashfs': backup }, 'default');
    const dropped = `${ids[0]}.squashfs ${ids[1]}.squashfs upperfs.squashfs`;
    expect(b.record).toMatchObject({ used: 'default', state_id: baseId, skipped: ids[2], chain: '0', chain_dropped: dropped });
    expect(b.record.fallback).toBe(
      `upperfs.squashfs: its checkpoint chain ended early, at ${ids[0]}.squashfs fails its checksum (cksum mismatch); booted the base alone, dropped: ${dropped}`,
    );
    expect(b.console).toContain(`cairn: applying checkpoint ${ids[0]}.squashfs\n`);
    expect(b.console).toContain(`cairn: warning: ${ids[0]}.squashfs fails its checksum (cksum mismatch): the chain ends before it; dropped: ${dropped}`);
    expect(b.console).not.toContain(`applying checkpoint ${ids[1]}.squashfs`);
    const alone = await boot({ 'upperfs.squashfs': base }, 'default');
    expect(await differences(alone.upper, b.upper)).toEqual([]);
  });

  it('ends the chain before a tip whose bytes fail their check: the links before it boot', async () => {
    const flipped = sb.path('flipped-tip');
    await bitFlippedCopy(deltas[2]!, flipped, 100);
    const b = await boot({ ...stick(), 'upperfs.squashfs': flipped, 'upperfs-backup.squashfs': backup }, 'default');
    expect(b.record).toMatchObject({ used: 'default', state_id: ids[1], skipped: ids[2], chain: '2', chain_dropped: 'upperfs.squashfs' });
    expect(b.record.fallback).toBe(
      'upperfs.squashfs: its checkpoint chain ended early, at upperfs.squashfs fails its checksum (cksum mismatch); booted a base and 2 checkpoints, dropped: upperfs.squashfs',
    );
    expect(await differences(snaps[1]!, b.upper)).toEqual([]);
  });

  it('ends the chain at a missing middle link likewise', async () => {
    const files = stick();
    delete files[link(ids[1]!)];
    const b = await boot({ ...files, 'upperfs-backup.squashfs': backup }, 'default');
    const dropped = `${ids[1]}.squashfs upperfs.squashfs`;
    expect(b.record).toMatchObject({ used: 'default', state_id: ids[0], skipped: ids[2], chain: '1', chain_dropped: dropped });
    expect(b.record.fallback).toContain(`its checkpoint chain ended early, at ${ids[1]}.squashfs is missing;`);
    expect(b.console).toContain(`cairn: warning: ${ids[1]}.squashfs is missing: the chain ends before it; dropped: ${dropped}`);
    expect(await differences(snaps[0]!, b.upper)).toEqual([]);
  });

  it('falls back to the backup when the base is missing, or fails its check while it unpacks', async () => {
    const files = stick();
    delete files[link(baseId)];
    const missing = await boot({ ...files, 'upperfs-backup.squashfs': backup }, 'default');
    expect(missing.record).toMatchObject({ used: 'backup', state_id: 'id-backup', skipped: ids[2], chain: '0', chain_dropped: '' });
    expect(missing.record.fallback).toBe(`upperfs.squashfs is a checkpoint whose base ${link(baseId)} is missing`);
    expect(missing.console).toContain(`cairn: warning: upperfs.squashfs is a checkpoint whose base ${link(baseId)} is missing; booting the backup (upperfs-backup.squashfs) instead`);
    expect(await readFile(join(missing.upper, 'etc/hostname'), 'utf8')).toBe('backup\n');

    const flipped = sb.path('flipped-base');
    await bitFlippedCopy(base, flipped, 100);
    const damaged = await boot({ ...stick(), [link(baseId)]: flipped, 'upperfs-backup.squashfs': backup }, 'default');
    expect(damaged.record).toMatchObject({ used: 'backup', state_id: 'id-backup', skipped: ids[2], chain: '0', chain_dropped: '' });
    expect(damaged.record.fallback).toBe(`upperfs.squashfs: ${baseId}.squashfs fails its checksum (cksum mismatch)`);
    expect(await readFile(join(damaged.upper, 'etc/hostname'), 'utf8')).toBe('backup\n');
  });

  it('boots a backup that is the tip of a shorter chain: asked for, or as the fallback from a damaged newest tip', async () => {
    const files = { ...stick(), 'upperfs-backup.squashfs': deltas[1]! };
    const asked = await boot(files, 'backup');
    expect(asked.record).toMatchObject({ requested: 'backup', used: 'backup', state_id: ids[1], fallback: '', chain: '2', chain_dropped: '' });
    expect(asked.console).toContain(`cairn: booting the backup (upperfs-backup.squashfs), id ${ids[1]}: a base and 2 checkpoints`);
    expect(await differences(snaps[1]!, asked.upper)).toEqual([]);

    const cut = sb.path('cut-tip');
    await truncatedCopy(deltas[2]!, cut);
    const fallen = await boot({ ...files, 'upperfs.squashfs': cut }, 'default');
    expect(fallen.record).toMatchObject({ requested: 'default', used: 'backup', state_id: ids[1], chain: '2', chain_dropped: '' });
    expect(fallen.record.fallback).toMatch(/^upperfs.squashfs has no intact seal at its end/);
    expect(await differences(snaps[1]!, fallen.upper)).toEqual([]);
  });

  it('throws the upper layer away and falls back when a checkpoint runs out of space while it is applied', async () => {
    const b = await boot({ ...stick(), 'upperfs-backup.squashfs': backup }, 'default', 2);
    expect(b.record).toMatchObject({ used: 'backup', state_id: 'id-backup', skipped: ids[2], chain: '0', chain_dropped: '' });
    expect(b.record.fallback).toBe('upperfs.squashfs does not fit in the upper layer (it ran out of space; see cairn.upper_size)');
    expect(b.console).toContain('booting the backup (upperfs-backup.squashfs) instead');
    expect(await readFile(join(b.upper, 'etc/hostname'), 'utf8')).toBe('backup\n');
    expect(await execa('ls', ['-A', join(b.upper, 'home/user')]).then((r) => r.stdout.split('\n').sort())).toEqual(['notes']);
  });
});

describe('the chain cairn checkpoint and cairn save lay out, booted', () => {
  it('writes deltas over the state the session booted from, boots them to exactly the session, merges the chain past chain_max, and removes links no state reaches', async () => {
    const lower = s.path('rt-lower');
    await mkdir(join(lower, 'etc'), { recursive: true });
    await writeFile(join(lower, 'etc/motd'), 'welcome\n');
    const data = await s.dataPartition('rt-data', 128);
    const conf = s.path('rt.conf');
    await writeFile(conf, 'compression=gzip\ncompression_level=1\nchain_max=2\nchain_ratio=10\n');
    const run = (args: string[]) => cairn(['--config', conf, ...args]);

    // A first session, saved whole.
    const first = await s.overlay(lower, 'rt-first');
    await mkdir(join(first.merged, 'home/user'), { recursive: true });
    await writeFile(join(first.merged, 'home/user/notes'), 'first\n');
    await writeFile(join(first.merged, 'home/user/gone'), 'removed by checkpoint 1\n');
    await s.unmount(first.merged);
    const saved = await run(['save', '--upper', first.upper, '--data', data, '--progress', 'none']);
    expect(saved.exitCode, saved.stderr).toBe(0);
    const baseSeal = await readSeal(join(data, 'upperfs.squashfs'));
    if (!baseSeal.ok) throw new Error(baseSeal.problem);

    // The next session, booted from it: the boot record says when the unpack ended.
    const upper = s.path('rt-sess', 'upper');
    await mkdir(upper, { recursive: true });
    await unpackAsBoot(join(data, 'upperfs.squashfs'), upper);
    const runDir = s.path('rt-run');
    await mkdir(runDir);
    const record = join(runDir, 'boot');
    await writeFile(
      record,
      `requested=default\nused=default\nstate_id=${baseSeal.seal.id}\nsession=rt-session\n` +
        `unpacked_at=${Math.floor(Date.now() / 1000)}\nunpacked_uptime=${(await readFile('/proc/uptime', 'utf8')).split(' ')[0]}\n`,
    );
    const merged = (await s.overlay(lower, 'rt-sess')).merged;
    const m = (p: string) => join(merged, p);
    const checkpoint = async () => {
      // Past the second of margin a checkpoint gives the clock (changes/baseline.ts): the next one does not take these again.
      await new Promise((r) => setTimeout(r, 1100));
      const r = await run(['checkpoint', '--upper', upper, '--data', data, '--boot-record', record, '--progress', 'none']);
      expect(r.exitCode, r.stderr).toBe(0);
      return r.stdout;
    };
    await new Promise((r) => setTimeout(r, 1100));

    await writeFile(m('home/user/notes'), 'changed by checkpoint 1\n');
    await rm(m('home/user/gone'));
    await rm(m('etc/motd'));
    expect(await checkpoint()).toMatch(/^saved a checkpoint of .* a base and 1 checkpoint$/m);
    const one = await readSeal(join(data, 'upperfs.squashfs'), { deltas: true });
    expect(one.ok && one.seal.kind).toBe('delta');
    expect(one.ok && one.seal.chain).toEqual([baseSeal.seal.id]);
    // The state the session came from is the backup.
    const backupSeal = await readSeal(join(data, 'upperfs-backup.squashfs'));
    expect(backupSeal.ok && backupSeal.seal.id).toBe(baseSeal.seal.id);

    expect(await checkpoint()).toMatch(/^nothing changed since .*: nothing written$/m);

    await writeFile(m('home/user/added'), 'added by checkpoint 2\n');
    await mkdir(m('home/user/dir'));
    await writeFile(m('home/user/dir/inside'), 'inside\n');
    // An ACL whose mask is the group's bits: the directory's mode stays as it was, the ACL is all that changed.
    await execa('setfacl', ['-m', 'u:1234:r-x', m('home/user')]);
    expect(await checkpoint()).toMatch(/a base and 2 checkpoints$/m);
    const two = await readSeal(join(data, 'upperfs.squashfs'), { deltas: true });
    if (!two.ok || !one.ok) throw new Error('the newest state does not read');
    expect(two.seal.chain).toEqual([baseSeal.seal.id, one.seal.id]);
    // The first checkpoint was this session's, replaced: no older state keeps it, but its link does.
    const names = await readdir(data);
    expect(names.filter((n) => n.startsWith('upperfs')).sort()).toEqual(['upperfs-backup.squashfs', 'upperfs.squashfs']);
    expect((await readdir(join(data, 'checkpoints'))).sort()).toEqual([baseSeal.seal.id, one.seal.id, two.seal.id].map((id) => `${id}.squashfs`).sort());

    const status = await run(['status', '--upper', upper, '--data', data, '--boot-record', record, '--quick']);
    expect(status.stdout).toMatch(/default +upperfs\.squashfs .* intact\n +a base and 2 checkpoints, the newest saved /);

    // The stick booted as it is: exactly the session.
    const files = Object.fromEntries(
      [...names.filter((n) => n.startsWith('upperfs')), ...(await readdir(join(data, 'checkpoints'))).map((n) => `checkpoints/${n}`)].map((n) => [n, join(data, n)]),
    );
    const b = await boot(files, 'default');
    expect(b.record).toMatchObject({ used: 'default', state_id: two.seal.id, chain: '2', chain_dropped: '' });
    expect(await differences(upper, b.upper)).toEqual([]);
    expect((await execa('getfacl', ['-cp', join(b.upper, 'home/user')])).stdout).toContain('user:1234:r-x');

    // What is unsaved, against the chain: a file changed and changed back is not listed; an ACL taken off is.
    await new Promise((r) => setTimeout(r, 1100));
    await chmod(m('home/user/added'), 0o600);
    await chmod(m('home/user/added'), 0o644);
    await writeFile(m('home/user/fresh'), 'new\n');
    await writeFile(m('home/user/notes'), 'changed after the checkpoints\n');
    await rm(m('home/user/dir/inside'));
    await execa('setfacl', ['-b', m('home/user')]);
    const diff = await run(['diff', '--upper', upper, '--data', data, '--boot-record', record]);
    expect(diff.exitCode, diff.stderr).toBe(0);
    expect(diff.stdout.split('\n').filter((l) => /^[AMD] /.test(l))).toEqual(['M home/user/', 'D home/user/dir/inside', 'A home/user/fresh', 'M home/user/notes']);

    // Past chain_max (2 checkpoints): the next is a whole state, and the chain's links go.
    await writeFile(m('home/user/added'), 'changed once more\n');
    expect(await checkpoint()).toMatch(/^saved [0-9.]+ [KMG]?i?B \(/m);
    const whole = await readSeal(join(data, 'upperfs.squashfs'));
    expect(whole.ok).toBe(true);
    expect(await readdir(join(data, 'checkpoints'))).toEqual([]);
    const again = await boot({ 'upperfs.squashfs': join(data, 'upperfs.squashfs') }, 'default');
    expect(await differences(upper, again.upper)).toEqual([]);
  }, 300_000);

  /** A saved state on a data partition, and a session booted from it: its upper layer and boot record, as the boot leaves them. */
  async function bootedSession(name: string): Promise<{ data: string; upper: string; bootRecord: string; before: Buffer }> {
    const data = await s.dataPartition(`${name}-data`, 256);
    const first = s.path(`${name}-first`);
    await mkdir(join(first, 'root'), { recursive: true });
    await writeFile(join(first, 'root/notes'), 'saved\n');
    expect((await cairn(['save', '--upper', first, '--data', data, '--progress', 'none'])).exitCode).toBe(0);
    const before = await readFile(join(data, 'upperfs.squashfs'));
    const seal = await readSeal(join(data, 'upperfs.squashfs'));
    const upper = s.path(`${name}-upper`);
    await mkdir(upper);
    await unpackAsBoot(join(data, 'upperfs.squashfs'), upper);
    const runDir = s.path(`${name}-run`);
    await mkdir(runDir);
    await writeFile(
      join(runDir, 'boot'),
      `requested=default\nused=default\nstate_id=${seal.ok ? seal.seal.id : ''}\nsession=t\nunpacked_at=${Math.floor(Date.now() / 1000)}\n` +
        `unpacked_uptime=${(await readFile('/proc/uptime', 'utf8')).split(' ')[0]}\n`,
    );
    return { data, upper, bootRecord: join(runDir, 'boot'), before };
  }

  /** What a checkpoint that wrote nothing leaves: no temp file, loop device or mount, and the newest state as it was. */
  async function expectNothingLeft(data: string, before: Buffer): Promise<void> {
    expect((await readdir(data)).filter((n) => n.includes('.tmp'))).toEqual([]);
    expect(await readFile(join(data, 'upperfs.squashfs'))).toEqual(before);
    const loops = (await execa('losetup', ['--associated', join(data, 'upperfs.squashfs'), '--noheadings'])).stdout;
    expect(loops).toBe('');
    expect(await readFile('/proc/self/mounts', 'utf8')).not.toContain('cairn-link-');
  }

  it('stopped by SIGTERM in the middle (the timer stopped at shutdown), a checkpoint leaves no temp file, mount or loop device, and the states as they were', async () => {
    const { data, upper, bootRecord, before } = await bootedSession('rt-term');
    await new Promise((r) => setTimeout(r, 1100));
    await execa('sh', ['-c', 'head -c 100000000 /dev/urandom >"$1"', 'sh', join(upper, 'root/big')]);
    const child = execa(process.execPath, [CLI, 'checkpoint', '--upper', upper, '--data', data, '--boot-record', bootRecord, '--progress', 'none'], { reject: false, stdin: 'ignore', forceKillAfterDelay: false });
    // Once its image is being written, the links are mounted and mksquashfs runs.
    for (let i = 0; i < 600 && !(await readdir(data)).some((n) => n.endsWith('.tmp.tmp')); i++) await new Promise((r) => setTimeout(r, 20));
    child.kill('SIGTERM');
    const r = await child;
    expect(r.exitCode, r.stderr).toBe(143);
    expect(r.stderr).toContain('stopped by SIGTERM');
    await expectNothingLeft(data, before);
  }, 120_000);

  it('stops within seconds when a file keeps growing while it is read (a download), names it, and leaves the states as they were; the next checkpoint, once the file is quiet, holds it', async () => {
    const { data, upper, bootRecord, before } = await bootedSession('rt-grow');
    await new Promise((r) => setTimeout(r, 1100));
    const file = join(upper, 'root/download part');
    await execa('sh', ['-c', 'head -c 20000000 /dev/urandom >"$1"', 'sh', file]);
    // mksquashfs on its own reads such a file again for as long as it grows.
    const writer = execa('sh', ['-c', 'while :; do head -c 65536 /dev/urandom >>"$1"; done', 'sh', file], { reject: false });
    const checkpoint = () => cairn(['checkpoint', '--upper', upper, '--data', data, '--boot-record', bootRecord, '--progress', 'none']);
    try {
      const started = Date.now();
      const r = await checkpoint();
      expect(r.exitCode, r.stderr).toBe(1);
      expect(r.stderr).toContain('/root/download part kept changing while it was read');
      expect(r.stderr).toMatch(/hint: run it again when that program is done/);
      expect(Date.now() - started).toBeLessThan(60_000);
      await expectNothingLeft(data, before);
    } finally {
      writer.kill('SIGKILL');
      await writer;
    }
    const again = await checkpoint();
    expect(again.exitCode, again.stderr).toBe(0);
    const listed = (await execa('unsquashfs', ['-lc', join(data, 'upperfs.squashfs')])).stdout;
    expect(listed).toContain('/root/download part');
  }, 120_000);

  it('refuses a checkpoint of a session that booted clean, with the exit status a timer retries on', async () => {
    const runDir = s.path('rt-clean');
    await mkdir(runDir);
    await writeFile(join(runDir, 'boot'), 'requested=clean\nused=clean\nsession=x\n');
    const data = await s.dataPartition('rt-clean-data', 64);
    const upper = s.path('rt-clean-upper');
    await mkdir(upper);
    const r = await cairn(['checkpoint', '--upper', upper, '--data', data, '--boot-record', join(runDir, 'boot'), '--progress', 'none']);
    expect(r.exitCode).toBe(75);
    expect(r.stderr).toContain('this session booted clean: no checkpoint');
    expect(await readdir(data)).not.toContain('upperfs.squashfs');
  });
});
