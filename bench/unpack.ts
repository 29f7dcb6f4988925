/**
 * npm run bench:unpack — the initramfs path (the seal check, then unpacking
 * into the upper layer with the state's check running beside unsquashfs,
 * exactly as initramfs/lib/state.sh and unpack.sh do it under busybox sh)
 * against the bare unsquashfs of the same image, in one run, caches dropped
 * before each. Each state is made by a real `cairn save`. Needs root.
 * Target (issue 17): at most 1.1x the bare unsquashfs.
 *
 * Two states:
 * - about 460 MiB of files, on a data partition read at this machine's speed;
 * - about 1 GiB of files, on a data partition read like a cheap USB stick
 *   (30 MB/s read, 15 MB/s write): the data partition's loop device is
 *   throttled by a cgroup (v1 blkio.throttle, or v2 io.max) holding the
 *   programs timed.
 * The initramfs path runs twice: with this machine's cksum (a Debian base's
 * initramfs carries coreutils' cksum) and with Alpine's busybox cksum (an
 * Alpine base has no coreutils), when ../shared/alpine holds Alpine's busybox.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { inThrottle, STICK, throttled, type Throttle } from './stick.js';

const MiB = 1 << 20;
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const stickRounds = Number(process.env.BENCH_STICK_ROUNDS ?? 1);
const cli = resolve('dist/cairn.mjs');
const lib = resolve('initramfs/lib');
const alpinePackages = resolve('../shared/alpine/packages');

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' });

/** The library sourced as init sources it: names and tunables, then the functions. */
function sourceLibrary(): string {
  const first = ['names.sh', 'config.sh'];
  const rest = readdirSync(lib).filter((f) => f.endsWith('.sh') && !first.includes(f)).sort();
  return [...first, ...rest].map((f) => `. '${join(lib, f)}' || exit 99\n`).join('');
}

function timed(argv: string[], env: Record<string, string>, throttle?: Throttle): number {
  sh('sync', []);
  writeFileSync('/proc/sys/vm/drop_caches', '3');
  const run = inThrottle(argv, throttle);
  const t = process.hrtime.bigint();
  const r = spawnSync(run[0]!, run.slice(1), { encoding: 'utf8', env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${r.status ?? r.signal}): ${`${r.stdout}${r.stderr}`.slice(-2000)}`);
  return Number(process.hrtime.bigint() - t) / 1e9;
}

/** A directory whose cksum is Alpine's busybox applet, run through musl's loader; undefined without ../shared/alpine. */
function alpineCksum(root: string): string | undefined {
  if (!existsSync(alpinePackages)) return undefined;
  const dir = join(root, 'alpine');
  mkdirSync(dir);
  for (const p of readdirSync(alpinePackages).filter((f) => /^(busybox|musl)-[0-9].*\.apk$/.test(f))) {
    spawnSync('tar', ['-xzf', join(alpinePackages, p), '-C', dir], { stdio: 'ignore' });
  }
  const bin = join(dir, 'path');
  mkdirSync(bin);
  writeFileSync(join(bin, 'cksum'), `#!/bin/sh\nexec '${dir}/lib/ld-musl-x86_64.so.1' '${dir}/bin/busybox' cksum "$@"\n`, { mode: 0o755 });
  return bin;
}

interface Variant {
  what: string;
  treeMiB: number;
  throttle: boolean;
  rounds: number;
}

function main(): void {
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root (tmpfs, loop mounts, cgroups)');
  const only = process.env.BENCH_ONLY;
  const variants: Variant[] = [
    { what: 'this machine', treeMiB: 460, throttle: false, rounds },
    { what: `a stick (${STICK.read / 1e6} MB/s read, ${STICK.write / 1e6} MB/s write)`, treeMiB: 1024, throttle: true, rounds: stickRounds },
  ].filter((v) => !only || (only === 'stick') === v.throttle);
  for (const v of variants) runVariant(v);
}

function runVariant(v: Variant): void {
  const root = mkdtempSync(join(tmpdir(), 'cairn-bench-unpack-'));
  const upper = join(root, 'upper');
  const data = join(root, 'data');
  const target = join(root, 'target');
  for (const d of [upper, data, target]) mkdirSync(d);
  const mounts: string[] = [];
  const mount = (args: string[], at: string) => {
    sh('mount', [...args, at]);
    mounts.push(at);
  };
  let throttle: Throttle | undefined;
  try {
    const tmpfs = `size=${Math.ceil((v.treeMiB * 1.3) / 1024)}G`;
    mount(['-t', 'tmpfs', '-o', tmpfs, 'tmpfs'], upper);
    // The target stands for the RAM upper layer the initramfs fills.
    mount(['-t', 'tmpfs', '-o', tmpfs, 'tmpfs'], target);
    sh('truncate', ['-s', `${Math.ceil((v.treeMiB * 2) / 1024) + 1}G`, join(root, 'data.img')]);
    sh('mkfs.ext4', ['-q', '-F', join(root, 'data.img')]);
    mount(['-o', 'loop', join(root, 'data.img')], data);
    const bytes = buildTree(upper, v.treeMiB / 460);
    sh(process.execPath, [cli, 'save', '--upper', upper, '--data', data]);
    sh('umount', [upper]);
    mounts.splice(mounts.indexOf(upper), 1);
    const image = join(data, 'upperfs.squashfs');
    const device = sh('findmnt', ['-n', '-o', 'SOURCE', data]).trim();
    if (v.throttle) throttle = throttled(device);
    const seal = sh('tail', ['-c', '4096', image]);
    const check = seal.includes('\ncksum_fix=') ? 'cksum of the whole file' : 'sha256 of the image (the seal has no cksum_fix)';
    console.log(
      `\n${v.what}: ${(bytes / MiB).toFixed(0)} MiB of files, image ${(statSync(image).size / MiB).toFixed(1)} MiB on ${device}; ` +
        `the boot checks it by the ${check}`,
    );
    if (throttle) {
      const read = timed(['dd', `if=${image}`, 'of=/dev/null', 'bs=1M', 'status=none'], {}, throttle);
      console.log(`  reading the image alone: ${read.toFixed(1)} s (${(statSync(image).size / read / 1e6).toFixed(1)} MB/s)`);
    }

    const initramfsPath = `${sourceLibrary()}
      cairn_debug=0
      state_check "$1" >/dev/null || exit 3
      state_unpack "$1" "$2" >/dev/null || exit 4`;
    const checkOnly = `${sourceLibrary()}
      state_check "$1" >/dev/null && state_verify "$1" >/dev/null`;
    const env = { CAIRN_KMSG: '/dev/null' };
    const alpineBin = alpineCksum(root);
    const alpineEnv = alpineBin ? { ...env, PATH: `${alpineBin}:${process.env.PATH}` } : undefined;
    const clean = () => sh('sh', ['-c', `rm -rf "${target}"/*`]);
    const ratio = (a: number, b: number) => `${a.toFixed(2)} s (ratio ${(a / b).toFixed(2)})`;
    for (let round = 1; round <= v.rounds; round++) {
      clean();
      const bare = timed(['unsquashfs', '-f', '-no-progress', '-d', join(target, 'u'), image], {}, throttle);
      clean();
      const path = timed(['busybox', 'sh', '-c', initramfsPath, 'sh', image, join(target, 'u')], env, throttle);
      clean();
      let alpine = '';
      if (alpineEnv) {
        const a = timed(['busybox', 'sh', '-c', initramfsPath, 'sh', image, join(target, 'u')], alpineEnv, throttle);
        clean();
        alpine = `, with Alpine's busybox cksum ${ratio(a, bare)}`;
      }
      const checked = timed(['busybox', 'sh', '-c', checkOnly, 'sh', image], env, throttle);
      console.log(
        `  round ${round}: bare unsquashfs ${bare.toFixed(2)} s; initramfs path with coreutils' cksum ${ratio(path, bare)}${alpine} ` +
          `(target <= 1.1); the check alone ${checked.toFixed(2)} s`,
      );
    }
    if (!alpineEnv) console.log(`  (no ${alpinePackages}: the path with Alpine's busybox cksum was not run)`);
  } finally {
    throttle?.remove();
    for (const m of mounts.reverse()) spawnSync('umount', [m]);
    rmSync(root, { recursive: true, force: true });
  }
}

/** About 460 MiB times SCALE: small text files, logs, random data. */
function buildTree(upper: string, scale: number): number {
  let bytes = 0;
  const put = (path: string, data: Buffer) => {
    writeFileSync(path, data);
    bytes += data.length;
  };
  for (let d = 0; d < 50; d++) {
    const dir = join(upper, 'home/user/docs', `d${d}`);
    mkdirSync(dir, { recursive: true });
    for (let f = 0; f < 100; f++) put(join(dir, `f${f}.txt`), Buffer.from(randomBytes(1024 + (f % 16) * 768).toString('base64')));
  }
  mkdirSync(join(upper, 'var/log'), { recursive: true });
  const logMiB = Math.round(64 * scale);
  const blobMiB = Math.round(48 * scale);
  for (let i = 0; i < 5; i++) put(join(upper, 'var/log', `log${i}`), Buffer.from(`cairn log line ${i} `.repeat((logMiB * MiB) / 20)));
  for (let i = 0; i < 3; i++) put(join(upper, 'var', `blob${i}`), randomBytes(blobMiB * MiB));
  return bytes;
}

main();
