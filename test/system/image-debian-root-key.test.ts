/**
 * The debian base's cached roots (the minimal base and the one with cairn's
 * packages) follow the suite's Release file as the mirror serves it.
 * debootstrap is a stand-in on PATH that records each call and makes a
 * tiny root (the build machine's static busybox, an apt-get that records
 * what it was asked to install) holding the Release file it read; the
 * chroot, its mounts and the cache are cairn's own.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { debianRoot } from '../../src/image/debian.js';
import { log } from '../../src/lib/log.js';
import { BUSYBOX } from '../helpers/initramfs-env.js';
import { requireSystem } from '../helpers/system.js';

const dir = mkdtempSync(join(tmpdir(), 'cairn-debian-root-key-'));
const calls = join(dir, 'debootstrap-calls');
const bin = join(dir, 'bin');
const mirror = join(dir, 'mirror');
const release = join(mirror, 'dists/bookworm/Release');
const savedPath = process.env.PATH;

const FAKE_DEBOOTSTRAP = `#!/bin/sh
set -e
while [ "\${1#--}" != "$1" ]; do shift; done
suite=$1 target=$2 mirror=$3
echo "$target" >> ${calls}
mkdir -p "$target/bin" "$target/usr/bin" "$target/usr/sbin" "$target/etc"
cp ${BUSYBOX} "$target/bin/busybox"
ln -s busybox "$target/bin/sh"
case $mirror in
  file:*) cat "\${mirror#file://}/dists/$suite/Release" > "$target/etc/release-seen" ;;
  *) echo "$mirror" > "$target/etc/release-seen" ;;
esac
printf '#!/bin/sh\\necho "$*" >> /installed\\n' > "$target/usr/bin/apt-get"
chmod 755 "$target/usr/bin/apt-get"
`;

function debootstrapCalls(): number {
  return existsSync(calls) ? readFileSync(calls, 'utf8').split('\n').filter(Boolean).length : 0;
}

const build = (mirrorUrl: string, cacheDir: string, target: string) =>
  debianRoot({ suite: 'bookworm', mirror: mirrorUrl, kernelPackage: 'linux-image-cloud-amd64', luks: false, cacheDir }, join(dir, target));

const seen = (target: string) => readFileSync(join(dir, target, 'etc/release-seen'), 'utf8');
const installs = (target: string) => readFileSync(join(dir, target, 'installed'), 'utf8').split('\n').filter(Boolean).length;
const roots = (cache: string) => readdirSync(join(cache, 'roots')).filter((f) => !f.endsWith('.lock')).sort();

/** A Release file as apt-ftparchive writes one; another Packages file, another Release. */
function writeRelease(packagesSha256: string): string {
  const text = `Origin: cairn-test\nSuite: bookworm\nCodename: bookworm\nComponents: main\nArchitectures: amd64\nSHA256:\n ${packagesSha256} 1234 main/binary-amd64/Packages\n`;
  mkdirSync(join(mirror, 'dists/bookworm'), { recursive: true });
  writeFileSync(release, text);
  return text;
}

beforeAll(() => {
  requireSystem(['busybox']);
  mkdirSync(bin);
  writeFileSync(join(bin, 'debootstrap'), FAKE_DEBOOTSTRAP);
  chmodSync(join(bin, 'debootstrap'), 0o755);
  process.env.PATH = `${bin}:${savedPath}`;
});
afterAll(() => {
  process.env.PATH = savedPath;
  rmSync(dir, { recursive: true, force: true });
});

describe('the debian root cache', () => {
  it('reuses the roots while the mirror serves the same Release, and bootstraps again after the mirror changed', async () => {
    const cache = join(dir, 'cache-file');
    const first = writeRelease('a'.repeat(64));
    await build(`file://${mirror}`, cache, 'a');
    await build(`file://${mirror}`, cache, 'b');
    expect(debootstrapCalls()).toBe(1);
    expect(seen('b')).toBe(first);
    expect(installs('b')).toBe(1);

    const second = writeRelease('b'.repeat(64));
    await build(`file://${mirror}`, cache, 'c');
    expect(debootstrapCalls()).toBe(2);
    expect(seen('c')).toBe(second);
    // Both the minimal base and the root with cairn's packages, for each Release.
    expect(roots(cache)).toHaveLength(4);

    await build(`file://${mirror}`, cache, 'd');
    expect(debootstrapCalls()).toBe(2);
    expect(seen('d')).toBe(second);
  });

  it('a mirror whose Release cannot be read gives roots made for that build alone, with a warning', async () => {
    const cache = join(dir, 'cache-unreachable');
    const unreachable = 'http://127.0.0.1:9/debian';
    const before = debootstrapCalls();
    const warn = vi.spyOn(log, 'warn').mockImplementation(() => undefined);
    try {
      await build(unreachable, cache, 'u1');
      await build(unreachable, cache, 'u2');
      expect(debootstrapCalls() - before).toBe(2);
      expect(seen('u2')).toBe(`${unreachable}\n`);
      expect(installs('u2')).toBe(1);
      const said = warn.mock.calls.map((c) => `${JSON.stringify(c[0])} ${String(c[1])}`);
      // The root with cairn's packages and, inside it, the minimal base, each build.
      expect(said).toHaveLength(4);
      expect(said[0]).toMatch(/dists\/bookworm\/InRelease: .*dists\/bookworm\/Release: .*could not be read.*bootstrapping the root \(debian-bookworm\) afresh/);
    } finally {
      warn.mockRestore();
    }
    expect(existsSync(join(cache, 'roots')) ? roots(cache) : []).toEqual([]);
  });
});
