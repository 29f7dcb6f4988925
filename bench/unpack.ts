/**
 * npm run bench:unpack — the initramfs path (the seal check, then unpacking
 * into the upper layer, exactly as initramfs/lib/state.sh and unpack.sh do it
 * under busybox sh) against the bare unsquashfs of the same image, in one
 * run. The state (about 500 MiB of files) is made by a real `cairn save`.
 * Needs root. Target (issue 3): at most 1.1x the bare unsquashfs.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const MiB = 1 << 20;
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const cli = resolve('dist/cairn.mjs');
const lib = resolve('initramfs/lib');

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' });

function timed(argv: string[], env: Record<string, string> = {}): number {
  sh('sync', []);
  writeFileSync('/proc/sys/vm/drop_caches', '3');
  const t = process.hrtime.bigint();
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed: ${r.stdout}${r.stderr}`);
  return Number(process.hrtime.bigint() - t) / 1e9;
}

function main(): void {
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root (tmpfs, loop mounts)');
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
  try {
    mount(['-t', 'tmpfs', '-o', 'size=1G', 'tmpfs'], upper);
    // The target stands for the RAM upper layer the initramfs fills.
    mount(['-t', 'tmpfs', '-o', 'size=1G', 'tmpfs'], target);
    sh('truncate', ['-s', '2G', join(root, 'data.img')]);
    sh('mkfs.ext4', ['-q', '-F', join(root, 'data.img')]);
    mount(['-o', 'loop', join(root, 'data.img')], data);
    const bytes = buildTree(upper);
    sh(process.execPath, [cli, 'save', '--upper', upper, '--data', data]);
    const image = join(data, 'upperfs.squashfs');
    console.log(`state: ${(bytes / MiB).toFixed(0)} MiB of files, image ${(statSync(image).size / MiB).toFixed(1)} MiB`);

    const initramfsPath = `
      set -e
      for f in names config log size state unpack; do . "${lib}/$f.sh"; done
      cairn_debug=0
      state_check "$1" >/dev/null
      state_unpack "$1" "$2" >/dev/null`;
    const checkOnly = `
      for f in names config log size state; do . "${lib}/$f.sh"; done
      state_check "$1" >/dev/null`;
    const env = { CAIRN_KMSG: '/dev/null' };
    for (let round = 1; round <= rounds; round++) {
      const clean = () => sh('sh', ['-c', `rm -rf "${target}"/*`]);
      clean();
      const bare = timed(['unsquashfs', '-f', '-no-progress', '-d', join(target, 'u'), image]);
      clean();
      const path = timed(['busybox', 'sh', '-c', initramfsPath, 'sh', image, join(target, 'u')], env);
      clean();
      const check = timed(['busybox', 'sh', '-c', checkOnly, 'sh', image], env);
      console.log(
        `round ${round}: bare unsquashfs ${bare.toFixed(2)} s, initramfs path ${path.toFixed(2)} s, ` +
          `ratio ${(path / bare).toFixed(2)} (target <= 1.1); of which the seal check alone ${check.toFixed(2)} s`,
      );
    }
  } finally {
    for (const m of mounts.reverse()) spawnSync('umount', [m]);
    rmSync(root, { recursive: true, force: true });
  }
}

/** About 500 MiB: small text files, logs, random data. */
function buildTree(upper: string): number {
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
  for (let i = 0; i < 5; i++) put(join(upper, 'var/log', `log${i}`), Buffer.from(`cairn log line ${i} `.repeat(64 * MiB / 20)));
  for (let i = 0; i < 3; i++) put(join(upper, 'var', `blob${i}`), randomBytes(48 * MiB));
  return bytes;
}

main();
