/**
 * What the benchmarks share to stand for a cheap USB stick: a cgroup that
 * throttles one block device, and the programs timed run inside it.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** A cheap USB stick, bytes per second. */
export const STICK = { read: 30_000_000, write: 15_000_000 };

/** Where the timed programs run: a cgroup throttling one device. */
export interface Throttle {
  procs: string;
  remove: () => void;
}

/**
 * A cgroup whose reads from and writes to DEVICE are limited as a stick's:
 * cgroup v2's io.max where the io controller is there, else v1's blkio.
 * Under v1 only I/O a process issues itself is limited (its reads, its
 * fsync), not the kernel's background writeback.
 */
export function throttled(device: string): Throttle {
  const rdev = statSync(device).rdev;
  const majMin = `${Math.floor(rdev / 256) & 0xfff}:${(rdev & 0xff) | ((rdev >> 12) & 0xfff00)}`;
  const name = `cairn-bench-${process.pid}`;
  const v2 = '/sys/fs/cgroup';
  const controllers = join(v2, 'cgroup.controllers');
  if (existsSync(controllers) && execFileSync('cat', [controllers], { encoding: 'utf8' }).split(/\s+/).includes('io')) {
    const dir = join(v2, name);
    mkdirSync(dir);
    writeFileSync(join(v2, 'cgroup.subtree_control'), '+io');
    writeFileSync(join(dir, 'io.max'), `${majMin} rbps=${STICK.read} wbps=${STICK.write}`);
    return { procs: join(dir, 'cgroup.procs'), remove: () => rmdirSync(dir) };
  }
  const v1 = '/sys/fs/cgroup/blkio';
  if (!existsSync(join(v1, 'blkio.throttle.read_bps_device'))) {
    throw new Error('no cgroup io controller (v2 io.max or v1 blkio.throttle) to throttle the data partition with');
  }
  const dir = join(v1, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'blkio.throttle.read_bps_device'), `${majMin} ${STICK.read}`);
  writeFileSync(join(dir, 'blkio.throttle.write_bps_device'), `${majMin} ${STICK.write}`);
  return { procs: join(dir, 'cgroup.procs'), remove: () => rmdirSync(dir) };
}

/** ARGV run inside THROTTLE's cgroup: a shell joins it, then becomes the program, so all it and its children do is throttled. */
export function inThrottle(argv: string[], throttle: Throttle | undefined): string[] {
  return throttle ? ['sh', '-c', `echo $$ >'${throttle.procs}' && exec "$@"`, 'sh', ...argv] : argv;
}
