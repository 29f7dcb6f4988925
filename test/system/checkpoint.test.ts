/**
 * Checkpoint deltas on a real session: a state saved and unpacked as the
 * boot does into the upper layer of a real overlayfs, changes of every kind
 * made through the overlay, three deltas written in turn, and the chain
 * applied by the initramfs's own functions (lib/chain.sh, busybox sh) into
 * a fresh directory, compared exactly with the session's upper layer. Then
 * the faults: a damaged, missing or truncated link, a crash while a delta
 * is written, a file changed while it is.
 */
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { appendFile, chmod, chown, copyFile, link, mkdir, open, readFile, rename, rm, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeDelta, deltaTemp, type DeltaOptions, type DeltaReport } from '../../src/checkpoint/write.js';
import { DEFAULTS } from '../../src/config.js';
import { KeepsChangingError, RefusedError, VerifyMismatchError } from '../../src/lib/errors.js';
import { compareTrees } from '../../src/save/compare.js';
import { compileExcludes } from '../../src/save/exclude.js';
import { walkTree } from '../../src/save/tree.js';
import { checkIntegrity, Cksum, encodeSeal, readSeal } from '../../src/state/seal.js';
import { listStates } from '../../src/state/states.js';
import { busyboxSh } from '../helpers/initramfs-env.js';
import { requireSystem, Scratch, unpackAsBoot } from '../helpers/system.js';
import { prelude } from './initramfs/fixtures.js';
import { sealImage } from './initramfs/seal.js';

const config = { ...DEFAULTS, compression: 'gzip' as const, compressionLevel: 1 };
const matcher = compileExcludes(config.excludes);
/** BYTES random bytes at PATH. */
async function randomFile(path: string, bytes: number): Promise<void> {
  await execa('sh', ['-c', 'head -c "$1" /dev/urandom >"$2"', 'sh', String(bytes), path]);
}

/** A name no UTF-8 reader can decode. */
const NOT_UTF8 = Buffer.from([0x6e, 0xff, 0xfe, 0x2d]);

describe('checkpoint deltas over a real overlayfs session', () => {
  const s = new Scratch();
  let lower: string;
  let upper: string;
  let merged: string;
  let data: string;
  let base: string;
  let baseId: string;
  let baseMount: string;
  const deltas: string[] = [];
  const reports: DeltaReport[] = [];
  /** The upper layer as of each delta, copied with cp -a (xattrs, links, whiteouts). */
  const snaps: string[] = [];
  const m = (p: string) => join(merged, p);

  const options = (n: number, parentRoot: string, since: number, chain: string[]): DeltaOptions => ({
    upperDir: upper,
    parent: { root: parentRoot },
    contentsSinceMs: since,
    chain,
    output: join(data, `delta-${n}`),
    session: 'test-session',
    config,
  });

  beforeAll(async () => {
    requireSystem(['mksquashfs', 'unsquashfs', 'getfattr', 'setfattr', 'losetup', 'busybox', 'setfacl']);
    lower = s.path('lower');
    for (const d of ['etc', 'opt/app/lib', 'usr/share', 'tmp']) await mkdir(join(lower, d), { recursive: true });
    await writeFile(join(lower, 'etc/hostname'), 'base\n');
    await writeFile(join(lower, 'etc/motd'), 'welcome\n');
    await writeFile(join(lower, 'opt/app/lib/a.so'), 'a\n');
    await writeFile(join(lower, 'opt/app/readme'), 'app\n');
    data = await s.dataPartition('data', 512);

    // The state the session boots from, saved from a first session.
    const first = await s.overlay(lower, 'first');
    const f = (p: string) => join(first.merged, p);
    await mkdir(f('home/user/docs'), { recursive: true });
    await mkdir(f('home/user/dd/sub'), { recursive: true });
    await mkdir(f('home/user/typechg-dir'), { recursive: true });
    await writeFile(f('home/user/docs/notes'), 'notes\n');
    await writeFile(f('home/user/docs/keep'), 'kept in a re-added dir\n');
    await writeFile(f('home/user/dd/a'), 'a\n');
    await writeFile(f('home/user/dd/sub/b'), 'b\n');
    await writeFile(f('home/user/typechg-dir/x'), 'x\n');
    await writeFile(f('home/user/same'), 'aaaa\n');
    await writeFile(f('home/user/linked'), 'one inode\n');
    // A group across a directory that is re-added whole later: its other name must come along.
    await writeFile(f('home/user/docs/hl-in'), 'linked across\n');
    await link(f('home/user/docs/hl-in'), f('home/user/hl-out'));
    await writeFile(f('home/user/to-rename'), 'renamed\n');
    await writeFile(f('home/user/mode'), 'mode\n');
    await writeFile(f('home/user/owned'), 'owner\n');
    await writeFile(f('home/user/xattr'), 'x\n');
    await writeFile(f('home/user/gone'), 'removed later\n');
    await writeFile(f('home/user/typechg'), 'a file, then a dir\n');
    await writeFile(f('home/user/odd\nname'), 'odd\n');
    await writeFile(f('home/user/-dash'), 'dash\n');
    await writeFile(f('home/user/with space'), 'space\n');
    await writeFile(Buffer.concat([Buffer.from(f('home/user/')), NOT_UTF8]), 'bytes\n');
    // Unchanged all along: no delta may read it (its bytes would make the delta large).
    await randomFile(f('home/user/big-unchanged'), 8 << 20);
    await symlink('docs/notes', f('home/user/shortcut'));
    await writeFile(f('etc/hostname'), 'first\n');
    await s.unmount(first.merged);
    base = join(data, 'base.squashfs');
    await execa('mksquashfs', [first.upper, base, '-noappend', '-quiet', '-no-progress', '-xattrs']);
    baseId = (await sealImage(base, {}, { cksum: true })).id;

    // The session: the state unpacked as the boot does, a real overlayfs over it.
    upper = s.path('sess', 'upper');
    await mkdir(upper, { recursive: true });
    await unpackAsBoot(base, upper);
    const unpacked = Date.now();
    merged = (await s.overlay(lower, 'sess')).merged;
    baseMount = s.path('base-mnt');
    await mkdir(baseMount);
    await execa('mount', ['-o', 'loop,ro', '-t', 'squashfs', base, baseMount]);
    // Changes from here on carry later ctimes than every unpacked file.
    await new Promise((r) => setTimeout(r, 1100));
    const since1 = unpacked + 500;

    // Round 1: every kind of change.
    await mkdir(m('home/user/new-dir/deep'), { recursive: true });
    await writeFile(m('home/user/new-dir/deep/file'), 'new\n');
    await writeFile(m('home/user/docs/notes'), 'notes, changed\n');
    await chmod(m('home/user/mode'), 0o600);
    await chown(m('home/user/owned'), 1234, 5678);
    await execa('setfattr', ['-n', 'user.note', '-v', 'hello', m('home/user/xattr')]);
    await rm(m('home/user/gone'));
    await rm(m('etc/motd')); // a base file: a whiteout
    await rm(m('opt/app'), { recursive: true }); // then made again: opaque
    await mkdir(m('opt/app'));
    await writeFile(m('opt/app/fresh'), 'fresh\n');
    await symlink('../docs', m('home/user/new-link'));
    await execa('mkfifo', [m('home/user/fifo')]);
    await execa('mknod', [m('home/user/null'), 'c', '1', '3']);
    await link(m('home/user/linked'), m('home/user/linked2')); // a link added to an old file
    await rename(m('home/user/to-rename'), m('home/user/renamed'));
    await rm(m('home/user/dd'), { recursive: true }); // deleted and made again
    await mkdir(m('home/user/dd'));
    await writeFile(m('home/user/dd/a'), 'a\n');
    await writeFile(m('home/user/same'), 'bbbb\n'); // changed and changed back
    await writeFile(m('home/user/same'), 'aaaa\n');
    await rm(m('home/user/typechg'));
    await mkdir(m('home/user/typechg'));
    await writeFile(m('home/user/typechg/inside'), 'now a dir\n');
    await rm(m('home/user/typechg-dir'), { recursive: true });
    await writeFile(m('home/user/typechg-dir'), 'now a file\n');
    await writeFile(m('home/user/odd\nname'), 'odd, changed\n');
    await writeFile(m('tmp/junk'), 'never saved\n');
    reports.push(await writeDelta(options(1, baseMount, since1, [baseId])));
    snaps.push(await snapshot(1));

    // Round 2: a directory's own mode (re-added whole), a group of links, depth, a non-UTF-8 name.
    await writeFile(m('home/user/new-dir/deep/file'), 'new, changed\n');
    await rm(m('home/user/renamed'));
    await chmod(m('home/user/docs'), 0o700);
    await writeFile(m('home/user/g1'), 'group\n');
    await link(m('home/user/g1'), m('home/user/g2'));
    await link(m('home/user/g1'), m('home/user/docs/g3'));
    let deep = m('home/user/deep');
    for (let i = 0; i < 30; i++) deep = join(deep, `level-${i}`);
    await mkdir(deep, { recursive: true });
    await writeFile(join(deep, 'bottom'), 'deep\n');
    await writeFile(Buffer.concat([Buffer.from(m('home/user/')), NOT_UTF8]), 'bytes, changed\n');
    await execa('setfattr', ['-x', 'user.note', m('home/user/xattr')]);
    // An ACL whose mask is the group's bits: the directory's mode stays as it was.
    await execa('setfacl', ['-m', 'u:1234:r-x', m('home/user/dd')]);
    reports.push(await writeDelta(options(2, snaps[0]!, reports[0]!.startedMs, [baseId, reports[0]!.seal!.id])));
    snaps.push(await snapshot(2));

    // Round 3: a base directory removed (its whiteout replaces a directory), a group shrunk, a new larger file.
    await rm(m('opt/app'), { recursive: true });
    await rm(m('home/user/linked2'));
    await rm(m('home/user/docs/g3'));
    await randomFile(m('home/user/blob'), 1 << 20);
    await rm(m('home/user/-dash'));
    await execa('setfacl', ['-b', m('home/user/dd')]); // taken off again, the mode still the same
    reports.push(await writeDelta(options(3, snaps[1]!, reports[1]!.startedMs, [baseId, reports[0]!.seal!.id, reports[1]!.seal!.id])));
    snaps.push(await snapshot(3));
    for (let i = 1; i <= 3; i++) deltas.push(join(data, `delta-${i}`));
  }, 300_000);

  afterAll(async () => {
    if (baseMount) await execa('umount', [baseMount], { reject: false });
    await s.cleanup();
  });

  async function snapshot(n: number): Promise<string> {
    const dir = s.path(`snap-${n}`);
    await execa('cp', ['-a', upper, dir]);
    return dir;
  }

  let applyCount = 0;
  /** chain_apply in busybox sh into a fresh directory; the variables it sets, what it said, the directory. */
  async function applyChain(files: string[]) {
    const dir = s.path(`applied-${applyCount++}`);
    const root = s.path(`root-${applyCount}`);
    await mkdir(dir);
    await mkdir(root);
    await writeFile(join(root, 'kmsg'), '');
    const args = files.map((_, i) => `"$F${i}"`).join(' ');
    const r = await busyboxSh(
      `${prelude()}chain_apply "$DIR" ${args}; rc=$?; echo "rc=$rc"; echo "applied=$cairn_chain_applied"; echo "dropped=$cairn_chain_dropped"; echo "ids=$cairn_chain_ids"`,
      { env: { DIR: dir, ROOT: root, CAIRN_KMSG: '/kmsg', ...Object.fromEntries(files.map((f, i) => [`F${i}`, f])) }, namespace: false },
    );
    const vars = Object.fromEntries(r.stdout.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    return { dir, vars, said: r.stderr };
  }

  /**
   * Every difference between the upper layer as saved (excludes applied) and
   * DIR: by the save's own comparison, and by a listing made with find,
   * stat, sha256sum and getfattr, independent of cairn's code.
   */
  async function differences(expected: string, dir: string): Promise<string[]> {
    const walk = walkTree(expected, matcher, { forSave: true });
    const result = await compareTrees({ upper: walk, upperRoot: expected, imageRoot: dir, since: Date.now() + 1e6 });
    // compareTrees reads an image's ACLs from its record, which the boot
    // removes once it has set them: the listing compares the ACLs themselves.
    const out = result.differences.filter((d) => d.what !== 'ACL').map((d) => `${d.path}: ${d.what} ${d.expected} / ${d.actual}`);
    const [a, b] = await Promise.all([listing(expected), listing(dir)]);
    const [la, lb] = [a.split('\n'), b.split('\n')];
    for (const line of la) if (!lb.includes(line)) out.push(`only in the session: ${line}`);
    for (const line of lb) if (!la.includes(line)) out.push(`only in the result: ${line}`);
    return out;
  }

  /** Per path (bytes as latin1, sorted): type, mode, owner, link count, target, device, file size and sha256, xattrs. */
  async function listing(root: string): Promise<string> {
    const script = `cd "$1" && find . -path ./tmp/junk -prune -o -exec stat -c '%n|%F|%a|%u:%g|%t:%T' {} + | sort &&
      find . -type f ! -path ./tmp/junk -exec sh -c 'for f; do printf "%s|%s|%s|" "$f" "$(stat -c %s "$f")" "$(stat -c %h "$f")"; sha256sum <"$f"; done' sh {} + | sort &&
      find . -type l -exec sh -c 'for f; do printf "%s|-> %s\\n" "$f" "$(readlink "$f")"; done' sh {} + | sort &&
      getfattr -R -P -h -d -m - -e hex . 2>/dev/null`;
    const r = await execa('sh', ['-c', script, 'sh', root], { encoding: 'latin1' as never });
    return String(r.stdout);
  }

  it('writes sealed deltas that hold only what changed, never reading an unchanged file', async () => {
    for (const [i, r] of reports.entries()) {
      expect(r.written).toBe(true);
      const check = await checkIntegrity(deltas[i]!, { deltas: true });
      expect(check.ok, check.ok ? '' : check.problem).toBe(true);
      expect(check.seal?.kind).toBe('delta');
      expect(check.seal?.chain).toEqual([baseId, ...reports.slice(0, i).map((x) => x.seal!.id)]);
      // The 8 MiB of random bytes never changed: no delta holds them.
      expect(r.bytes).toBeLessThan(i === 2 ? 2 << 20 : 256 << 10);
    }
    const listing = (await execa('unsquashfs', ['-l', deltas[0]!])).stdout;
    expect(listing).toContain('squashfs-root/home/user/docs/notes');
    expect(listing).toContain('squashfs-root/etc/motd'); // the whiteout
    expect(listing).not.toContain('big-unchanged');
    expect(listing).not.toContain('tmp/junk');
    expect(listing).not.toContain('squashfs-root/usr');
  });

  it('is no whole state: every reader that asks for one refuses it, and a boot that knows no deltas does not unpack it', async () => {
    const read = await readSeal(deltas[0]!);
    expect(read.ok).toBe(false);
    expect(read.ok ? '' : read.problem).toMatch(/checkpoint delta, not a whole state/);
    const r = await busyboxSh(`${prelude()}state_check "$F" && echo accepted`, { env: { F: deltas[0]!, ROOT: s.dir, CAIRN_KMSG: '/none' }, namespace: false });
    expect(r.stdout).toBe('is a checkpoint delta, not a whole state');
  });

  it('is passed over by listings, and by the boot when it lies under a state\'s name without its base: the backup boots', async () => {
    const root = s.path('boot-root');
    await mkdir(join(root, 'persist'), { recursive: true });
    await writeFile(join(root, 'kmsg'), '');
    await copyFile(deltas[0]!, join(root, 'persist/upperfs.squashfs'));
    await copyFile(base, join(root, 'persist/upperfs-backup.squashfs'));
    const r = await busyboxSh(`${prelude()}state_walk default; echo "used=$cairn_used"; echo "id=$cairn_state_id"; echo "why=$cairn_fallback"`, {
      env: { ROOT: root, CAIRN_KMSG: '/kmsg' },
      namespace: false,
    });
    expect(r.stdout).toContain('used=backup');
    expect(r.stdout).toContain(`id=${baseId}`);
    // A delta under a state's name is the tip of a chain: its base is not on this partition.
    expect(r.stdout).toContain(`why=upperfs.squashfs is a checkpoint whose base checkpoints/${baseId}.squashfs is missing`);
    const states = await listStates(join(root, 'persist'));
    expect(states.map((x) => [x.name, x.check.ok])).toEqual([
      ['upperfs.squashfs', false],
      ['upperfs-backup.squashfs', true],
    ]);
  });

  it('applies base and chain through the initramfs functions to exactly the session, after each link', async () => {
    for (let k = 1; k <= 3; k++) {
      const { dir, vars } = await applyChain([base, ...deltas.slice(0, k)]);
      expect(vars).toMatchObject({ rc: '0', applied: String(k), dropped: '' });
      expect(await differences(snaps[k - 1]!, dir)).toEqual([]);
    }
    const { dir } = await applyChain([base, ...deltas]);
    expect(await differences(upper, dir)).toEqual([]);
    // The removal list is gone with its record: nothing of the delta's own is left.
    expect(existsSync(join(dir, '.cairn-acls'))).toBe(false);
  });

  it('writes nothing when nothing changed', async () => {
    const r = await writeDelta(options(9, snaps[2]!, reports[2]!.startedMs, [baseId, ...reports.map((x) => x.seal!.id)]));
    expect(r).toMatchObject({ written: false, bytes: 0 });
    expect(existsSync(join(data, 'delta-9'))).toBe(false);
    expect(existsSync(deltaTemp(join(data, 'delta-9')))).toBe(false);
  });

  it('ends the chain before a damaged middle link: the result is the session as of the first delta', async () => {
    const flipped = s.path('flipped-2');
    await copyFile(deltas[1]!, flipped);
    const fh = await open(flipped, 'r+');
    const at = Math.floor((await stat(flipped)).size / 3);
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at);
    b[0] = b[0]! ^ 0x01;
    await fh.write(b, 0, 1, at);
    await fh.close();
    const { dir, vars, said } = await applyChain([base, deltas[0]!, flipped, deltas[2]!]);
    expect(vars).toMatchObject({ rc: '0', applied: '1', dropped: 'flipped-2 delta-3', ids: `${baseId},${reports[0]!.seal!.id}` });
    expect(said).toContain('flipped-2 fails its checksum (cksum mismatch): the chain ends before it; dropped: flipped-2 delta-3');
    expect(await differences(snaps[0]!, dir)).toEqual([]);
  });

  it('ends the chain at a missing link, and refuses a link that does not extend the ones before it', async () => {
    const missing = join(data, 'no-such-delta');
    const gap = await applyChain([base, deltas[0]!, missing, deltas[2]!]);
    expect(gap.vars).toMatchObject({ rc: '0', applied: '1' });
    expect(gap.said).toContain('no-such-delta is missing: the chain ends before it');
    expect(await differences(snaps[0]!, gap.dir)).toEqual([]);
    const skipped = await applyChain([base, deltas[0]!, deltas[2]!]);
    expect(skipped.vars).toMatchObject({ rc: '0', applied: '1', dropped: 'delta-3' });
    expect(skipped.said).toMatch(/delta-3 does not extend the links before it/);
    expect(await differences(snaps[0]!, skipped.dir)).toEqual([]);
  });

  it('ends the chain at a delta whose squashfs part was cut short', async () => {
    const cut = s.path('cut-2');
    const bytes = await readFile(deltas[1]!);
    // The squashfs part loses 4 KiB; list and seal stay as they were.
    const listAndSeal = (reports[1]!.seal!.removed ?? 0) + 4096;
    await writeFile(cut, Buffer.concat([bytes.subarray(0, bytes.length - listAndSeal - 4096), bytes.subarray(bytes.length - listAndSeal)]));
    const { dir, vars, said } = await applyChain([base, deltas[0]!, cut, deltas[2]!]);
    expect(vars).toMatchObject({ rc: '0', applied: '1' });
    expect(said).toMatch(/cut-2 is \d+ bytes where its seal says \d+ \(truncated or damaged\): the chain ends before it/);
    expect(await differences(snaps[0]!, dir)).toEqual([]);
    await truncate(cut, 100);
    expect((await applyChain([base, deltas[0]!, cut])).vars).toMatchObject({ rc: '0', applied: '1' });
  });

  it('refuses a removal list with a path that climbs out or passes through a symbolic link, before removing anything', async () => {
    const bytes = await readFile(deltas[1]!);
    const squashfsPart = bytes.subarray(0, reports[1]!.seal!.size - reports[1]!.seal!.removed!);
    const d1 = reports[0]!.seal!.id;
    for (const [n, paths, said] of [
      [1, ['home/user/docs/notes', '../../etc/x'], 'a bad path in its removal list: ../../etc/x'],
      [2, ['home/user/docs/notes', 'home/user/new-link/keep'], 'a path in its removal list below what is not a directory: home/user/new-link/keep'],
    ] as const) {
      const list = Buffer.from(paths.map((p) => `${p}\0`).join(''), 'latin1');
      const body = Buffer.concat([squashfsPart, list]);
      const sealed = { kind: 'delta' as const, size: body.length, sha256: createHash('sha256').update(body).digest('hex'), id: `crafted-${n}`, parent: d1 };
      const block = encodeSeal({ ...sealed, session: '', created: 0, files: 0, space: 0, removed: list.length, chain: [baseId, d1] }, { imageCksum: new Cksum().update(body).digest() });
      const crafted = s.path(`crafted-${n}`);
      await writeFile(crafted, Buffer.concat([body, block]));
      const { dir, vars, said: console } = await applyChain([base, deltas[0]!, crafted]);
      expect(vars).toMatchObject({ rc: '0', applied: '1', dropped: `crafted-${n}` });
      expect(console).toContain(`crafted-${n} ${said}: the chain ends before it`);
      expect(await differences(snaps[0]!, dir)).toEqual([]);
    }
  });

  it('leaves nothing under the delta\'s name when it stops before any step, and the temp file is litter the next write replaces', async () => {
    await writeFile(m('home/user/crash'), 'crash\n');
    const chain = [baseId, ...reports.map((x) => x.seal!.id)];
    for (const stopBefore of ['squash', 'list', 'verify', 'seal', 'rename'] as const) {
      const out = join(data, `delta-stop-${stopBefore}`);
      const r = await writeDelta({ ...options(4, snaps[2]!, reports[2]!.startedMs, chain), output: out, stopBefore });
      expect(r.written).toBe(false);
      expect(existsSync(out)).toBe(false);
    }
    // Killed while mksquashfs runs: a power cut's view of the partition.
    await randomFile(m('home/user/crash-big'), 96 << 20);
    const out = join(data, 'delta-killed');
    const child = execa('node_modules/.bin/vite-node', ['test/helpers/write-delta.ts', JSON.stringify({ ...options(4, snaps[2]!, reports[2]!.startedMs, chain), output: out })], {
      reject: false,
      detached: true,
    });
    for (let i = 0; i < 600 && !(existsSync(deltaTemp(out)) && statSync(deltaTemp(out)).size > 0); i++) await new Promise((r) => setTimeout(r, 50));
    expect(existsSync(deltaTemp(out))).toBe(true);
    process.kill(-child.pid!, 'SIGKILL');
    await child;
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(data).filter((n) => n.startsWith('delta-killed'))).toEqual(['delta-killed.tmp']);
    const again = await writeDelta({ ...options(4, snaps[2]!, reports[2]!.startedMs, chain), output: out });
    expect(again.written).toBe(true);
    expect(existsSync(deltaTemp(out))).toBe(false);
    await rm(m('home/user/crash-big'));
    await rm(m('home/user/crash'));
    await rm(out);
  }, 120_000);

  it('catches a file of the delta changed while it is written (no delta); an unchanged file changed behind the plan is the next delta\'s', async () => {
    const chain = [baseId, ...reports.map((x) => x.seal!.id)];
    await randomFile(m('home/user/live-big'), 64 << 20);
    const out = join(data, 'delta-live');
    const write = () =>
      writeDelta({ ...options(5, snaps[2]!, reports[2]!.startedMs, chain), output: out }).then(
        (r) => r,
        (e: unknown) => e,
      );
    // Once the temp file is there the plan is made.
    const planned = async () => {
      for (let i = 0; i < 600 && !existsSync(deltaTemp(out)); i++) await new Promise((r) => setTimeout(r, 20));
    };
    let done = false;
    let writing = write().finally(() => (done = true));
    await planned();
    // Changed again and again for a while: past the squash's read of it, or not.
    for (let i = 0; i < 60 && !done; i++) {
      await appendFile(m('home/user/live-big'), 'changed while the delta is written\n');
      await new Promise((r) => setTimeout(r, 30));
    }
    const first = await writing;
    // Caught by the comparison, or by mksquashfs reading it again and again.
    if (first instanceof VerifyMismatchError || first instanceof KeepsChangingError) {
      expect(first.message).toContain('/home/user/live-big');
      expect(existsSync(out)).toBe(false);
    } else {
      // Compared before the last change: that change is the next delta's.
      expect((first as DeltaReport).written).toBe(true);
      const after = await writeDelta({ ...options(7, snaps[2]!, (first as DeltaReport).startedMs, chain), output: join(data, 'delta-after') });
      expect((await execa('unsquashfs', ['-lc', join(data, 'delta-after')])).stdout).toContain('/home/user/live-big');
      await rm(join(data, 'delta-after'));
      await rm(out);
    }
    expect(existsSync(deltaTemp(out))).toBe(false);

    writing = write();
    await planned();
    await appendFile(m('home/user/docs/keep'), 'changed while the delta is written\n');
    const written = (await writing) as DeltaReport;
    expect(written.written).toBe(true);
    const next = await writeDelta({ ...options(6, snaps[2]!, written.startedMs, chain), output: join(data, 'delta-next') });
    expect(next.written).toBe(true);
    const held = (await execa('unsquashfs', ['-lc', join(data, 'delta-next')])).stdout;
    expect(held).toContain('/home/user/docs/keep');
    expect(held).not.toContain('live-big');
    await rm(out);
    await rm(join(data, 'delta-next'));
    await rm(m('home/user/live-big'));
  }, 180_000);
});

/**
 * A directory of thousands of files, hundreds of them changed (a package
 * added to /usr/lib, a mail folder): the exclude line that names what a
 * delta keeps of it would be longer than mksquashfs reads, and it gave up
 * on every checkpoint, and on the shutdown save that writes one.
 */
describe('a checkpoint of a wide directory, hundreds of its files changed', () => {
  const s = new Scratch();
  afterAll(() => s.cleanup());
  const names = Array.from({ length: 1900 }, (_, i) => `message-of-a-mail-folder.${String(i).padStart(5, '0')}`);
  const changedNames = names.filter((_, i) => i % 2 === 0).slice(0, 900);

  it('writes and verifies a delta holding exactly the changed files, which the chain applies', async () => {
    requireSystem(['mksquashfs', 'unsquashfs', 'losetup', 'busybox']);
    const lower = s.path('lower');
    await mkdir(join(lower, 'etc'), { recursive: true });
    const data = await s.dataPartition('data', 128);
    const first = await s.overlay(lower, 'first');
    await mkdir(join(first.merged, 'home/user/mail'), { recursive: true });
    for (const n of names) await writeFile(join(first.merged, 'home/user/mail', n), `${n}\n`);
    await s.unmount(first.merged);
    const base = join(data, 'base.squashfs');
    await execa('mksquashfs', [first.upper, base, '-noappend', '-quiet', '-no-progress', '-xattrs']);
    const baseId = (await sealImage(base, {}, { cksum: true })).id;
    const baseMount = s.path('base-mnt');
    await mkdir(baseMount);
    await execa('mount', ['-o', 'loop,ro', '-t', 'squashfs', base, baseMount]);
    try {
      const upper = s.path('sess', 'upper');
      await mkdir(upper, { recursive: true });
      await unpackAsBoot(base, upper);
      const since = Date.now() + 500;
      const merged = (await s.overlay(lower, 'sess')).merged;
      await new Promise((r) => setTimeout(r, 1100));
      for (const n of changedNames) await appendFile(join(merged, 'home/user/mail', n), 'read\n');

      const r = await writeDelta({ upperDir: upper, parent: { root: baseMount }, contentsSinceMs: since, chain: [baseId], output: join(data, 'delta-1'), session: 's', config });
      expect(r).toMatchObject({ written: true, changed: 900 });
      const listed = (await execa('unsquashfs', ['-l', join(data, 'delta-1')])).stdout.split('\n').filter((l) => l.includes('/mail/'));
      expect(listed.map((l) => l.slice(l.lastIndexOf('/') + 1)).sort()).toEqual([...changedNames].sort());

      const applied = s.path('applied');
      await mkdir(applied);
      await writeFile(s.path('kmsg'), '');
      const boot = await busyboxSh(`${prelude()}chain_apply "$DIR" "$B" "$D"; echo "rc=$? applied=$cairn_chain_applied"`, {
        env: { DIR: applied, B: base, D: join(data, 'delta-1'), ROOT: s.dir, CAIRN_KMSG: '/kmsg' },
        namespace: false,
      });
      expect(boot.stdout).toContain('rc=0 applied=1');
      for (const [i, n] of names.entries()) {
        const want = changedNames.includes(n) ? `${n}\nread\n` : `${n}\n`;
        if ((await readFile(join(applied, 'home/user/mail', n), 'utf8')) !== want) throw new Error(`${n} (${i}) is not as the session left it`);
      }
    } finally {
      await execa('umount', [baseMount], { reject: false });
    }
  }, 120_000);
});

/**
 * A squash that cannot be, or is not, what the plan says. The
 * verification's last line of defence: a delta that lacks a file the
 * session made before the checkpoint began must fail, whatever lost it. A
 * name missing from a directory is found by comparing the directory's
 * names, and that ran only in directories changed after the checkpoint
 * began: a delta without the file was sealed, and the file, older than it,
 * was in no later checkpoint either. Made certain here by a stand-in
 * mksquashfs on the PATH: the real one, told to leave out that file too.
 */
describe('a checkpoint whose squash is not what was planned', () => {
  const s = new Scratch();
  afterAll(() => s.cleanup());
  let round = 0;

  /**
   * A session with two files new since the base, and a checkpoint begun
   * well after both were made, through a stand-in mksquashfs that runs
   * BEFORE (a shell line; $UPPER is the upper layer) and then the real one
   * with EXTRA arguments. What writeDelta threw, and where it wrote.
   */
  async function checkpointWith(
    before: string,
    extra: string,
    more: { excludes?: string[]; change?: (merged: string) => Promise<void> } = {},
  ): Promise<{ error: unknown; output: string }> {
    requireSystem(['mksquashfs', 'unsquashfs', 'losetup', 'busybox']);
    const n = round++;
    const lower = s.path(`lower-${n}`);
    await mkdir(join(lower, 'etc'), { recursive: true });
    const data = await s.dataPartition(`data-${n}`, 64);
    const first = await s.overlay(lower, `first-${n}`);
    await mkdir(join(first.merged, 'home/user'), { recursive: true });
    await writeFile(join(first.merged, 'home/user/old'), 'saved before\n');
    await s.unmount(first.merged);
    const base = join(data, 'base.squashfs');
    await execa('mksquashfs', [first.upper, base, '-noappend', '-quiet', '-no-progress', '-xattrs']);
    const baseId = (await sealImage(base, {}, { cksum: true })).id;
    const baseMount = s.path(`base-mnt-${n}`);
    await mkdir(baseMount);
    await execa('mount', ['-o', 'loop,ro', '-t', 'squashfs', base, baseMount]);
    const upper = s.path(`sess-${n}`, 'upper');
    const bin = s.path(`bin-${n}`);
    await mkdir(bin);
    const real = (await execa('sh', ['-c', 'command -v mksquashfs'])).stdout;
    await writeFile(join(bin, 'mksquashfs'), `#!/bin/sh\nUPPER='${upper}'\n${before}\nexec ${real} "$@" ${extra}\n`);
    await chmod(join(bin, 'mksquashfs'), 0o755);
    const path = process.env.PATH;
    try {
      await mkdir(upper, { recursive: true });
      await unpackAsBoot(base, upper);
      const since = Date.now() + 500;
      const merged = (await s.overlay(lower, `sess-${n}`)).merged;
      await new Promise((r) => setTimeout(r, 1100));
      await more.change?.(merged);
      await writeFile(join(merged, 'home/user/kept'), 'new\n');
      await writeFile(join(merged, 'home/user/lost'), 'new, and then not in the delta\n');
      await new Promise((r) => setTimeout(r, 1100));
      process.env.PATH = `${bin}:${path}`;
      const output = join(data, 'delta-1');
      const conf = { ...config, excludes: [...config.excludes, ...(more.excludes ?? [])] };
      const write = writeDelta({ upperDir: upper, parent: { root: baseMount }, contentsSinceMs: since, chain: [baseId], output, session: 's', config: conf });
      return { error: await write.then(() => undefined, (err: unknown) => err), output };
    } finally {
      process.env.PATH = path;
      await execa('umount', [baseMount], { reject: false });
    }
  }

  it('fails its verification, naming the file, and nothing is written', async () => {
    const { error, output } = await checkpointWith(':', '-e home/user/lost');
    expect(error).toBeInstanceOf(VerifyMismatchError);
    const e = error as VerifyMismatchError;
    expect(e.differences.map((d) => `${d.path} ${d.actual}`)).toEqual(['/home/user/lost missing from the parent and the delta']);
    expect(e.live).toBe(false);
    expect(existsSync(output)).toBe(false);
    expect(existsSync(deltaTemp(output))).toBe(false);
  }, 60_000);

  it('refuses, for a whole save to do it, when a name the save excludes sits where no exclude line can name it', async () => {
    // Eight levels of names of 250 newlines: a line naming what is in the
    // last would be over 18 000 bytes. "x" there is excluded by the
    // save's patterns, and "new" beside it is a change.
    const deep = `home/user/${Array.from({ length: 8 }, () => '\n'.repeat(250)).join('/')}`;
    const { error, output } = await checkpointWith(':', '', {
      excludes: [`home/user/${Array(8).fill('*').join('/')}/x`],
      change: async (merged) => {
        await mkdir(join(merged, deep), { recursive: true });
        await writeFile(join(merged, deep, 'x'), 'excluded\n');
        await writeFile(join(merged, deep, 'new'), 'changed\n');
      },
    });
    expect(error).toBeInstanceOf(RefusedError);
    expect((error as RefusedError).message).toMatch(/^\/home\/user\/\n+.*\.\.\..*\/x cannot be left out of a checkpoint \(its path is too long to name to mksquashfs\)$/s);
    expect(existsSync(output)).toBe(false);
    expect(existsSync(deltaTemp(output))).toBe(false);
  }, 60_000);

  it('when the file was removed while the checkpoint ran, says so: a checkpoint a moment later will do', async () => {
    const { error } = await checkpointWith('rm "$UPPER/home/user/lost"', '');
    expect(error).toBeInstanceOf(VerifyMismatchError);
    const e = error as VerifyMismatchError;
    expect(e.differences.map((d) => d.path)).toEqual(['/home/user/lost']);
    expect(e.live).toBe(true);
    expect(e.hint).toMatch(/changed while the checkpoint ran/);
  }, 60_000);
});
