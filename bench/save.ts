/**
 * npm run bench:save — `cairn save` against the bare mksquashfs with the
 * same options, in one run, caches dropped before each. Prints wall times,
 * their ratio, the save's phases, the image size, and the bytes written to
 * the data partition per save (from its loop device's /sys/block/<dev>/stat).
 * Both sides end with an fsync of the image, as a save must. Needs root.
 *
 * Two variants:
 * - a ~934 MiB tree, on a data partition written and read at this machine's
 *   speed (BENCH_ROUNDS rounds, default 2);
 * - a ~300 MiB tree (smaller, to keep the run short), on a data partition
 *   throttled like a cheap USB stick, 30 MB/s read and 15 MB/s write: the
 *   programs timed run in a cgroup limiting its loop device (bench/stick.ts;
 *   BENCH_STICK_ROUNDS rounds, default 1).
 * BENCH_ONLY=machine or BENCH_ONLY=stick runs one of them.
 *
 * Targets (issue 17): save with verification at most 1.5x the bare
 * mksquashfs; bytes written at most 1.05x the image size.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULTS } from '../src/config.js';
import { mksquashfsArgs } from '../src/save/squash.js';
import { inThrottle, STICK, throttled, type Throttle } from './stick.js';

const MiB = 1 << 20;
const rounds = Number(process.env.BENCH_ROUNDS ?? 2);
const stickRounds = Number(process.env.BENCH_STICK_ROUNDS ?? 1);
// BENCH_LEVEL compares another zstd level; both sides always use the same options.
const config = { ...DEFAULTS, compressionLevel: Number(process.env.BENCH_LEVEL ?? DEFAULTS.compressionLevel) };
const cli = join(process.cwd(), 'dist/cairn.mjs');
const cores = availableParallelism();

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8' });
}

interface Variant {
  what: string;
  /** The tree's size against the full ~934 MiB one. */
  scale: number;
  throttle: boolean;
  rounds: number;
}

function main(): void {
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root (tmpfs, loop mounts, cgroups)');
  for (const tool of ['mksquashfs', 'losetup', 'mkfs.ext4']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is missing`);
  }
  const only = process.env.BENCH_ONLY;
  const variants: Variant[] = [
    { what: 'this machine', scale: 1, throttle: false, rounds },
    { what: `a stick (${STICK.read / 1e6} MB/s read, ${STICK.write / 1e6} MB/s write)`, scale: 0.32, throttle: true, rounds: stickRounds },
  ].filter((v) => !only || (only === 'stick') === v.throttle);
  for (const v of variants) runVariant(v);
}

function runVariant(v: Variant): void {
  const hasTime = existsSync('/usr/bin/time');
  const root = mkdtempSync(join(tmpdir(), 'cairn-bench-'));
  const upper = join(root, 'upper');
  const data = join(root, 'data');
  mkdirSync(upper);
  mkdirSync(data);
  // The upper layer lives in RAM, as it does on a running cairn system.
  sh('mount', ['-t', 'tmpfs', '-o', 'size=3G', 'tmpfs', upper]);
  let throttle: Throttle | undefined;
  try {
    sh('truncate', ['-s', '4G', join(root, 'data.img')]);
    sh('mkfs.ext4', ['-q', '-F', join(root, 'data.img')]);
    sh('mount', ['-o', 'loop', join(root, 'data.img'), data]);
    try {
      const loop = sh('losetup', ['--associated', join(root, 'data.img'), '--noheadings', '--output', 'NAME']).trim().split('\n')[0]!;
      if (v.throttle) throttle = throttled(loop);
      const tree = buildTree(upper, v.scale);
      console.log(`\n${v.what}: tree of ${tree.files} files, ${(tree.bytes / MiB).toFixed(0)} MiB (small files, text, random, zeros), data partition on ${loop}`);
      console.log(`mksquashfs options: ${mksquashfsArgs(config).join(' ')} -wildcards -ef <default excludes>`);
      const excludeFile = join(root, 'exclude');
      writeFileSync(excludeFile, DEFAULTS.excludes.map((p) => `${p}\n`).join(''));

      const stat = () => readFileSync(`/sys/block/${loop.replace('/dev/', '')}/stat`, 'utf8').trim().split(/\s+/).map(Number);
      const measure = (argv: string[]) => {
        sh('sync', []);
        writeFileSync('/proc/sys/vm/drop_caches', '3');
        const before = stat();
        const t = process.hrtime.bigint();
        const cmd = inThrottle(hasTime ? ['/usr/bin/time', '-f', '%M %U %S', ...argv] : argv, throttle);
        const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8' });
        const seconds = Number(process.hrtime.bigint() - t) / 1e9;
        if (r.status !== 0) throw new Error(`${argv.join(' ')} failed: ${r.stderr}`);
        const after = stat();
        sh('sync', []);
        const written = stat();
        const [rss, user, sys] = hasTime ? r.stderr.trim().split('\n').pop()!.split(' ').map(Number) : [NaN, NaN, NaN];
        return {
          seconds,
          cpuSeconds: user! + sys!,
          maxRssKiB: rss!,
          bytesWritten: (written[6]! - before[6]!) * 512,
          bytesRead: (after[2]! - before[2]!) * 512,
          stdout: r.stdout,
        };
      };

      for (let round = 1; round <= v.rounds; round++) {
        const bareImage = join(data, 'bare.squashfs');
        // The bare tool, followed by the fsync of the image a save does too.
        const bare = measure(['sh', '-c', 'mksquashfs "$@" && sync "$2"', 'sh', upper, bareImage, ...mksquashfsArgs(config), '-wildcards', '-ef', excludeFile]);
        const bareSize = statSync(bareImage).size;
        // The least a save that reads its image back whole could add: the bare
        // unsquashfs of it, into RAM as the boot does (never on the stick).
        const readBack = measure(['unsquashfs', '-q', '-n', '-d', join(upper, '.bench-unsquashed'), bareImage]);
        rmSync(join(upper, '.bench-unsquashed'), { recursive: true, force: true });
        rmSync(bareImage);
        writeFileSync(join(root, 'cairn.conf'), `compression_level=${config.compressionLevel}\n`);
        const save = measure([process.execPath, cli, '--config', join(root, 'cairn.conf'), 'save', '--upper', upper, '--data', data, '--json']);
        const report = JSON.parse(save.stdout) as { bytes: number; maxRssKiB: number; phaseSeconds: Record<string, number> };
        const image = statSync(join(data, 'upperfs.squashfs')).size;
        console.log(
          [
            `round ${round}:`,
            `bare mksquashfs ${bare.seconds.toFixed(1)} s`,
            `cairn save ${save.seconds.toFixed(1)} s`,
            `ratio ${(save.seconds / bare.seconds).toFixed(2)} (target <= 1.5)`,
            `bare read-back (unsquashfs of the image into RAM) ${readBack.seconds.toFixed(1)} s; bare mksquashfs then it: ` +
              `${(bare.seconds + readBack.seconds).toFixed(1)} s = ${((bare.seconds + readBack.seconds) / bare.seconds).toFixed(2)} x`,
            `CPU time: bare mksquashfs ${bare.cpuSeconds.toFixed(1)} s, bare read-back ${readBack.cpuSeconds.toFixed(1)} s, cairn save ${save.cpuSeconds.toFixed(1)} s; ` +
              `on ${cores} cores the two bare tools need at least ${((bare.cpuSeconds + readBack.cpuSeconds) / cores).toFixed(1)} s = ` +
              `${((bare.cpuSeconds + readBack.cpuSeconds) / cores / bare.seconds).toFixed(2)} x however they overlap`,
            `image ${(image / MiB).toFixed(1)} MiB (bare ${(bareSize / MiB).toFixed(1)} MiB)`,
            `written by the save ${(save.bytesWritten / MiB).toFixed(1)} MiB = ${(save.bytesWritten / image).toFixed(3)} x image (target <= 1.05)`,
            `written by bare ${(bare.bytesWritten / MiB).toFixed(1)} MiB`,
            `read from the data partition by the save ${(save.bytesRead / MiB).toFixed(1)} MiB = ${(save.bytesRead / image).toFixed(2)} x image`,
            `phases ${Object.entries(report.phaseSeconds).map(([k, s]) => `${k} ${s.toFixed(1)} s`).join(', ')}`,
            `peak RSS: cairn's node process ${(report.maxRssKiB / 1024).toFixed(0)} MiB` +
              (hasTime
                ? `, largest process of the save ${(save.maxRssKiB / 1024).toFixed(0)} MiB, of bare mksquashfs ${(bare.maxRssKiB / 1024).toFixed(0)} MiB`
                : ' (install GNU time for the others)'),
          ].join('\n  '),
        );
      }
    } finally {
      throttle?.remove();
      spawnSync('umount', [data]);
    }
  } finally {
    spawnSync('umount', [upper]);
    rmSync(root, { recursive: true, force: true });
  }
}

/** About 1 GiB times SCALE: many small files and some large ones, compressible and not. */
function buildTree(upper: string, scale: number): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  const put = (path: string, data: Buffer) => {
    writeFileSync(path, data);
    files++;
    bytes += data.length;
  };
  const words = 'cairn stick ram squashfs overlay upper lower state backup boot grub kernel module firmware save verify rotate'.split(' ');
  const text = (n: number) => {
    const parts: string[] = [];
    let len = 0;
    while (len < n) {
      const line = `${Date.now() % 100000} ${words[(len * 7) % words.length]} ${randomBytes(6).toString('hex')} ${words[(len * 13) % words.length]}\n`;
      parts.push(line);
      len += line.length;
    }
    return Buffer.from(parts.join('')).subarray(0, n);
  };
  for (let d = 0; d < Math.round(200 * scale); d++) {
    const dir = join(upper, 'home/user/projects', `p${d}`);
    mkdirSync(dir, { recursive: true });
    for (let f = 0; f < 100; f++) put(join(dir, `f${f}.txt`), text(1024 + ((d * 100 + f) % 16) * 1024));
  }
  mkdirSync(join(upper, 'var/log'), { recursive: true });
  mkdirSync(join(upper, 'opt/blobs'), { recursive: true });
  for (let i = 0; i < 6; i++) put(join(upper, 'var/log', `big${i}.log`), text(Math.round(64 * scale) * MiB));
  for (let i = 0; i < 4; i++) put(join(upper, 'opt/blobs', `random${i}.bin`), randomBytes(Math.round(64 * scale) * MiB));
  for (let i = 0; i < 2; i++) put(join(upper, 'opt/blobs', `zeros${i}.img`), Buffer.alloc(Math.round(64 * scale) * MiB));
  return { files, bytes };
}

main();
