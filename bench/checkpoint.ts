/**
 * A checkpoint delta on a ~1 GiB upper layer (about 20 000 files): with
 * about 10 MiB changed, against the bare mksquashfs of the changed files
 * alone and the full `cairn save` of the same upper layer; and with nothing
 * changed. Prints wall times and the bytes written to the data partition
 * (its loop device's /sys/block/<dev>/stat). Needs root and dist/cairn.mjs
 * (npm run build). Run: node_modules/.bin/vite-node bench/checkpoint.ts
 *
 * Targets (issue 13): a delta writes at most 20 MiB and takes at most 3x
 * the bare mksquashfs of the changed files; nothing changed: under 1 s and
 * 0 bytes.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { writeDelta } from '../src/checkpoint/write.js';
import { DEFAULTS } from '../src/config.js';
import { mksquashfsArgs } from '../src/save/squash.js';

const MiB = 1 << 20;
const config = { ...DEFAULTS };
const cli = join(process.cwd(), 'dist/cairn.mjs');
const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8' });

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root (tmpfs, loop mounts)');
  const root = mkdtempSync(join(tmpdir(), 'cairn-bench-ckpt-'));
  const upper = join(root, 'upper');
  const data = join(root, 'data');
  const parent = join(root, 'parent');
  const staging = join(root, 'changed-only');
  for (const d of [upper, data, parent, staging]) mkdirSync(d);
  sh('mount', ['-t', 'tmpfs', '-o', 'size=3G', 'tmpfs', upper]);
  sh('mount', ['-t', 'tmpfs', '-o', 'size=256M', 'tmpfs', staging]);
  sh('truncate', ['-s', '4G', join(root, 'data.img')]);
  sh('mkfs.ext4', ['-q', '-F', join(root, 'data.img')]);
  sh('mount', ['-o', 'loop', join(root, 'data.img'), data]);
  try {
    const loop = sh('losetup', ['--associated', join(root, 'data.img'), '--noheadings', '--output', 'NAME']).trim().split('\n')[0]!;
    const written = () => Number(readFileSync(`/sys/block/${loop.replace('/dev/', '')}/stat`, 'utf8').trim().split(/\s+/)[6]) * 512;
    const measure = async <T>(fn: () => Promise<T> | T) => {
      sh('sync', []);
      writeFileSync('/proc/sys/vm/drop_caches', '3');
      const before = written();
      const t = process.hrtime.bigint();
      const result = await fn();
      const seconds = Number(process.hrtime.bigint() - t) / 1e9;
      sh('sync', []);
      return { result, seconds, bytes: written() - before };
    };

    const tree = buildTree(upper);
    console.log(`tree: ${tree.files} files, ${(tree.bytes / MiB).toFixed(0)} MiB; mksquashfs options: ${mksquashfsArgs(config).join(' ')}`);
    // The parent link: the upper layer squashed as a save would, mounted read only.
    const base = join(data, 'base.squashfs');
    sh('mksquashfs', [upper, base, ...mksquashfsArgs(config), '-no-progress']);
    sh('mount', ['-o', 'loop,ro', '-t', 'squashfs', base, parent]);
    await new Promise((r) => setTimeout(r, 1100));
    const since = Date.now() - 50;
    const options = (name: string) => ({ upperDir: upper, parent: { root: parent }, contentsSinceMs: since, chain: ['base'], output: join(data, name), session: 'bench', config });

    const idle = await measure(() => writeDelta(options('delta-idle')));
    console.log(`nothing changed: ${idle.seconds.toFixed(2)} s (target < 1 s), ${idle.bytes} bytes written (target 0), delta written: ${idle.result.written}`);

    // About 10 MiB changed: 300 small files rewritten, 40 removed, one new 8 MiB file.
    const changed: string[] = [];
    for (let i = 0; i < 300; i++) {
      const rel = `home/user/projects/p${i % 200}/f${(i * 7) % 100}.txt`;
      writeFileSync(join(upper, rel), text(4096 + (i % 8) * 1024));
      changed.push(rel);
    }
    for (let i = 0; i < 40; i++) unlinkSync(join(upper, `home/user/projects/p${199 - i}/f${i + 50}.txt`));
    writeFileSync(join(upper, 'home/user/new-download.bin'), randomBytes(8 * MiB));
    changed.push('home/user/new-download.bin');
    let changedBytes = 0;
    for (const rel of changed) {
      mkdirSync(dirname(join(staging, rel)), { recursive: true });
      writeFileSync(join(staging, rel), readFileSync(join(upper, rel)));
      changedBytes += statSync(join(upper, rel)).size;
    }
    const delta = await measure(() => writeDelta(options('delta-1')));
    const bareImage = join(data, 'changed-only.squashfs');
    const bare = await measure(() => {
      sh('mksquashfs', [staging, bareImage, ...mksquashfsArgs(config), '-no-progress']);
      sh('sync', ['-f', bareImage]);
    });
    const r = delta.result;
    console.log(
      [
        `changed: ${changed.length} files rewritten or new (${(changedBytes / MiB).toFixed(1)} MiB), 40 removed`,
        `checkpoint delta: ${delta.seconds.toFixed(2)} s, ${(r.bytes / MiB).toFixed(1)} MiB file, ${(delta.bytes / MiB).toFixed(1)} MiB written to the partition (target <= 20 MiB)`,
        `  phases: ${Object.entries(r.seconds).map(([k, v]) => `${k} ${v!.toFixed(2)} s`).join(', ')}; ${r.entries} entries, ${r.removals} removals`,
        `bare mksquashfs of the changed files alone: ${bare.seconds.toFixed(2)} s, ${(statSync(bareImage).size / MiB).toFixed(1)} MiB; ratio ${(delta.seconds / bare.seconds).toFixed(2)} (target <= 3)`,
      ].join('\n'),
    );
    writeFileSync(join(root, 'cairn.conf'), '');
    const save = await measure(() => {
      const out = spawnSync(process.execPath, [cli, '--config', join(root, 'cairn.conf'), 'save', '--upper', upper, '--data', data, '--json'], { encoding: 'utf8' });
      if (out.status !== 0) throw new Error(`cairn save failed: ${out.stderr}`);
    });
    console.log(`full cairn save of the same upper layer: ${save.seconds.toFixed(1)} s, ${(save.bytes / MiB).toFixed(1)} MiB written`);
    await chainUnpack(root, upper, data);
  } finally {
    spawnSync('umount', [parent]);
    spawnSync('umount', [data]);
    spawnSync('umount', [staging]);
    spawnSync('umount', [upper]);
    rmSync(root, { recursive: true, force: true });
  }
}

/**
 * The boot's side: the state just saved, then 8 checkpoints written by the
 * real `cairn checkpoint` (about 1 MiB changed each), unpacked link by link
 * by the initramfs library under busybox sh (chain_apply), against the same
 * session saved as one whole state and unpacked as the boot unpacks one
 * (state_check, state_unpack). Caches dropped before each.
 */
async function chainUnpack(root: string, upper: string, data: string): Promise<void> {
  const conf = join(root, 'cairn.conf');
  const record = join(root, 'run', 'boot');
  mkdirSync(dirname(record));
  const seal = sh('tail', ['-c', '4096', join(data, 'upperfs.squashfs')]);
  const id = /^id=(.*)$/m.exec(seal)![1]!;
  const uptime = readFileSync('/proc/uptime', 'utf8').split(' ')[0]!;
  writeFileSync(record, `requested=default\nused=default\nstate_id=${id}\nsession=bench\nunpacked_at=${Math.floor(Date.now() / 1000)}\nunpacked_uptime=${uptime}\n`);
  await new Promise((r) => setTimeout(r, 1100));
  const asRun: number[] = [];
  for (let n = 1; n <= 8; n++) {
    for (let i = 0; i < 20; i++) writeFileSync(join(upper, `home/user/projects/p${(n * 20 + i) % 200}/f${n}.txt`), text(24 * 1024));
    writeFileSync(join(upper, `home/user/checkpoint-${n}.bin`), randomBytes(512 * 1024));
    await new Promise((r) => setTimeout(r, 1100));
    const t = process.hrtime.bigint();
    const out = spawnSync(process.execPath, [cli, '--config', conf, 'checkpoint', '--upper', upper, '--data', data, '--boot-record', record, '--progress', 'none'], { encoding: 'utf8' });
    asRun.push(Number(process.hrtime.bigint() - t) / 1e9);
    if (out.status !== 0 || !out.stdout.includes(`a base and ${n} checkpoint`)) throw new Error(`cairn checkpoint ${n}: ${out.stdout}${out.stderr}`);
  }
  console.log(
    `cairn checkpoint as a user runs it (the CLI started, the chain's links mounted, about 1 MiB changed), chains of 1 to 8 links: ` +
      asRun.map((s) => s.toFixed(2)).join(', ') +
      ' s',
  );
  const tip = readFileSync(join(data, 'upperfs.squashfs')).subarray(-4096).toString('latin1');
  const chain = /^chain=(.*)$/m.exec(tip)![1]!.split(',');
  const links = [...chain.map((x) => join(data, 'checkpoints', `${x}.squashfs`)), join(data, 'upperfs.squashfs')];
  // On the same data partition as the chain: both are read through its loop device.
  const whole = join(data, 'whole');
  mkdirSync(whole);
  sh(process.execPath, [cli, '--config', conf, 'save', '--upper', upper, '--data', whole, '--progress', 'none']);
  const target = join(root, 'target');
  mkdirSync(target, { recursive: true });
  sh('mount', ['-t', 'tmpfs', '-o', 'size=3G', 'tmpfs', target]);
  const lib = join(process.cwd(), 'initramfs/lib');
  const first = ['names.sh', 'config.sh'];
  const library = [...first, ...readdirSync(lib).filter((f) => f.endsWith('.sh') && !first.includes(f)).sort()].map((f) => `. '${join(lib, f)}' || exit 99\n`).join('');
  const boot = (script: string, args: string[]) => {
    sh('sh', ['-c', `rm -rf "${target}"/*`]);
    sh('sync', []);
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    const t = process.hrtime.bigint();
    const r = spawnSync('busybox', ['sh', '-c', `${library}cairn_debug=0\n${script}`, 'sh', ...args], { encoding: 'utf8', env: { ...process.env, CAIRN_KMSG: '/dev/null' } });
    if (r.status !== 0) throw new Error(`the boot's unpack failed: ${r.stdout}${r.stderr}`);
    return Number(process.hrtime.bigint() - t) / 1e9;
  };
  try {
    const sizes = links.map((f) => statSync(f).size);
    for (let round = 1; round <= 2; round++) {
      const one = boot('state_check "$2" >/dev/null || exit 3\nstate_unpack "$2" "$1/u" >/dev/null || exit 4', [target, join(whole, 'upperfs.squashfs')]);
      const chained = boot('u=$1; shift; mkdir "$u/u"; chain_apply "$u/u" "$@" >/dev/null || exit 4; [ "$cairn_chain_applied" = 8 ] || exit 5', [target, ...links]);
      console.log(
        `boot, round ${round}: a base (${(sizes[0]! / MiB).toFixed(0)} MiB) and 8 checkpoints (${(sizes.slice(1).reduce((a, b) => a + b, 0) / MiB).toFixed(1)} MiB) ` +
          `unpacked in ${chained.toFixed(2)} s; the same session as one whole state in ${one.toFixed(2)} s; ratio ${(chained / one).toFixed(2)} (target <= 1.2)`,
      );
    }
  } finally {
    spawnSync('umount', [target]);
  }
}

const words = 'cairn stick ram squashfs overlay upper lower state backup boot grub kernel module firmware save verify rotate'.split(' ');
function text(n: number): Buffer {
  const parts: string[] = [];
  let len = 0;
  while (len < n) {
    const line = `${Date.now() % 100000} ${words[(len * 7) % words.length]} ${randomBytes(6).toString('hex')} ${words[(len * 13) % words.length]}\n`;
    parts.push(line);
    len += line.length;
  }
  return Buffer.from(parts.join('')).subarray(0, n);
}

/**
 * The shape of bench:save's tree (bench/save.ts buildTree, which cannot be
 * imported: that file runs its benchmark when loaded): 20 000 small text
 * files, large logs, random and zero blobs, about 1 GiB.
 */
function buildTree(upper: string): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  const put = (path: string, data: Buffer) => {
    writeFileSync(path, data);
    files++;
    bytes += data.length;
  };
  for (let d = 0; d < 200; d++) {
    const dir = join(upper, 'home/user/projects', `p${d}`);
    mkdirSync(dir, { recursive: true });
    for (let f = 0; f < 100; f++) put(join(dir, `f${f}.txt`), text(1024 + ((d * 100 + f) % 16) * 1024));
  }
  mkdirSync(join(upper, 'var/log'), { recursive: true });
  mkdirSync(join(upper, 'opt/blobs'), { recursive: true });
  for (let i = 0; i < 6; i++) put(join(upper, 'var/log', `big${i}.log`), text(64 * MiB));
  for (let i = 0; i < 4; i++) put(join(upper, 'opt/blobs', `random${i}.bin`), randomBytes(64 * MiB));
  for (let i = 0; i < 2; i++) put(join(upper, 'opt/blobs', `zeros${i}.img`), Buffer.alloc(64 * MiB));
  return { files, bytes };
}

await main();
