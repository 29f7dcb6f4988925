/**
 * The early boot on the userspace each base really ships, in an initramfs
 * cairn builds from it and runs chrooted: Alpine's real busybox, e2fsprogs
 * and musl (from ../shared/alpine; Alpine's busybox has no mke2fs and no
 * cttyhack), and this machine's Debian busybox-static and e2fsprogs. The
 * upper layer is made on real zram and tmpfs; the rescue shell runs as PID 1
 * would, on a pseudo-terminal standing in for the console.
 */
import { execa } from 'execa';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { InitramfsReport } from '../../../src/initramfs/build.js';
import { BUSYBOX, keyValues, requireAlpinePackages, requireRoot, requireTools, unpackAlpinePackages } from '../../helpers/initramfs-env.js';
import { alpineRoot, buildState, requireZramAndOverlay, Sandbox, testInitramfs } from './fixtures.js';

let sb: Sandbox;
const built: Record<string, { tree: string; report: InitramfsReport }> = {};
const MiB = 1 << 20;
let rootCount = 0;

beforeAll(async () => {
  requireRoot('chroot, zram and mounts');
  requireTools(['busybox', 'unshare', 'chroot', 'cpio', 'script', 'setsid', 'mkfs.ext4', 'dumpe2fs']);
  requireAlpinePackages();
  await requireZramAndOverlay();
  sb = await Sandbox.create('userspace');
  built.alpine = await testInitramfs(sb.path('alpine'), await alpineRoot(sb.path('alpine-root')));
  built.debian = await testInitramfs(sb.path('debian'), '/', BUSYBOX);
});

afterEach(() => {
  sb?.resetZram();
});

afterAll(async () => {
  await sb?.cleanup();
});

describe("the initramfs of Alpine's real packages", () => {
  it("carries Alpine's own busybox, which has no mke2fs and no cttyhack, and e2fsprogs' mkfs.ext4 with musl's loader", async () => {
    const pkg = sb.path('alpine-busybox-pkg');
    await unpackAlpinePackages(pkg, ['busybox']);
    const { tree, report } = built.alpine!;
    expect(readFileSync(join(tree, 'bin/busybox'))).toEqual(readFileSync(join(pkg, 'bin/busybox')));
    expect(existsSync(join(tree, 'sbin/mke2fs'))).toBe(false);
    expect(existsSync(join(tree, 'bin/cttyhack'))).toBe(false);
    const mkfs = report.programs.find((p) => p.name === 'mkfs.ext4');
    expect(mkfs?.path).toBe('/sbin/mkfs.ext4');
    expect(mkfs?.libraries).toEqual(expect.arrayContaining(['/lib/ld-musl-x86_64.so.1', '/lib/libext2fs.so.2', '/lib/libcom_err.so.2']));
  });
});

describe.each(['alpine', 'debian'])('the early boot on the %s userspace', (base) => {
  const tree = () => built[base]!.tree;

  it("makes the zram upper layer ext4 with e2fsprogs' mkfs.ext4 (ea_inode, no journal), and a real overlay over it", async () => {
    const root = await sb.root(`root-${rootCount++}`);
    const r = await sb.lib(
      `upper_create zram ${64 * MiB} || exit 1
echo "used=$cairn_upper_used"
echo "mount=$(awk -v d="$ROOT$CAIRN_UPPER_MOUNT" '$2 == d { print $1, $3 }' /proc/self/mounts)"
mkdir -p "$ROOT/lower/etc" "$ROOT/merged" && echo x >"$ROOT/lower/etc/f"
mount -t overlay -o "lowerdir=$ROOT/lower,upperdir=$ROOT$CAIRN_UPPER_DIR,workdir=$ROOT$CAIRN_WORK_DIR" o "$ROOT/merged" || exit 3
rm "$ROOT/merged/etc/f" && echo "whiteout=$(stat -c '%F %t:%T' "$ROOT$CAIRN_UPPER_DIR/etc/f")"`,
      { root, binds: ['dev', 'sys'], initramfs: tree() },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    const v = keyValues(r.stdout);
    expect(v.used, r.stderr).toBe('zram');
    expect(v.whiteout).toBe('character special file 0:0');
    const [dev, type] = v.mount!.split(' ');
    expect(type).toBe('ext4');
    expect(r.stderr).not.toContain('warning');
    // The file system stays on the device after the namespace is gone (until afterEach resets it).
    const fs = keyValues((await execa('dumpe2fs', ['-h', dev!.replace(/^.*\/dev\//, '/dev/')], { stderr: 'ignore' })).stdout.replace(/:\s+/g, '='));
    expect(fs['Filesystem volume name']).toBe('cairn-upper');
    expect(fs['Filesystem features']!.split(' ')).toContain('ea_inode');
    expect(fs['Filesystem features']!.split(' ')).not.toContain('has_journal');
    expect(fs['Block size']).toBe('4096');
  });

  it("checks a state's cksum with the cksum it carries (coreutils' where the base has it, else busybox's), and catches a flipped bit in its seal", async () => {
    const state = sb.path(`state-${base}.squashfs`);
    await buildState(sb, state, `ck-${base}`, 1, { cksum: true });
    const bytes = await readFile(state);
    const seal = bytes.subarray(bytes.length - 4096).toString('latin1');
    for (const [name, offset] of [['image', 1500], ['id', bytes.length - 4096 + seal.indexOf('\nid=') + 4]] as const) {
      const copy = Buffer.from(bytes);
      copy[offset]! ^= 1;
      await writeFile(sb.path(`state-${base}-${name}.squashfs`), copy);
    }
    const root = await sb.root(`root-${rootCount++}`);
    const r = await sb.lib(
      `echo "cksum=$(command -v cksum)"
for f in "" -image -id; do
  why=$(state_check "${sb.path(`state-${base}`)}$f.squashfs" && state_verify "${sb.path(`state-${base}`)}$f.squashfs")
  echo "check$f=$? $why"
done`,
      { root, binds: [], initramfs: tree() },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    const v = keyValues(r.stdout);
    // Debian's busybox-static has no cksum applet; Alpine's base has no coreutils.
    expect(v.cksum).toBe(base === 'debian' ? '/usr/sbin/cksum' : '/usr/bin/cksum');
    expect(built[base]!.report.programs.some((p) => p.name === 'cksum')).toBe(base === 'debian');
    expect(v.check).toBe('0 ');
    expect(v['check-image']).toBe('1 fails its checksum (cksum mismatch)');
    expect(v['check-id']).toBe('1 fails its checksum (cksum mismatch)');
  });

  it('mounts the tmpfs upper layer', async () => {
    const root = await sb.root(`root-${rootCount++}`);
    const r = await sb.lib(
      `upper_create tmpfs ${32 * MiB} || exit 1
echo "used=$cairn_upper_used"
echo "mount=$(awk -v d="$ROOT$CAIRN_UPPER_MOUNT" '$2 == d { print $1, $3 }' /proc/self/mounts)"`,
      { root, binds: [], initramfs: tree() },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    expect(keyValues(r.stdout)).toEqual({ used: 'tmpfs', mount: 'cairn-upper tmpfs' });
  });

  it('gives the rescue shell the console as its controlling terminal, itself in the foreground (Ctrl-C reaches it)', async () => {
    const root = await sb.root(`root-${rootCount++}`);
    // What the rescue shell would find: its terminal (tty_nr), the foreground group of that terminal, its own group.
    const probe = sb.path(`probe-${rootCount}`);
    await writeFile(
      probe,
      `#!/bin/sh
read -r _ _ _ _ pgrp _ tty tpgid _ </proc/self/stat
echo "rescue_tty=$tty"
echo "console=$(stat -L -c '%t:%T' /proc/self/fd/0)"
[ "$pgrp" = "$tpgid" ] && echo "rescue_foreground=yes"
{ : </dev/tty; } 2>/dev/null && echo "rescue_dev_tty=yes"
`,
    );
    await chmod(probe, 0o755);
    const r = await sb.lib('cairn_debug=1\nfatal "no data partition"', {
      root,
      initramfs: tree(),
      pid1: true,
      console: true,
      env: { CAIRN_SHELL: probe },
    });
    const out = r.stdout.replaceAll('\r', '');
    // fatal powers off after the shell (a stand-in here), then leaves PID 1.
    expect(r.exitCode, out).toBe(1);
    expect(out).toContain('cannot boot: no data partition');
    expect(out).toContain('FAKE-POWEROFF -f');
    const v = keyValues(out);
    const [major, minor] = v.console!.split(':').map((h) => parseInt(h, 16));
    // tty_nr as /proc/<pid>/stat gives it: the minor's low byte, the major, the minor's high bits.
    expect(Number(v.rescue_tty), out).toBe((minor! & 0xff) | (major! << 8) | ((minor! & ~0xff) << 12));
    expect(v.rescue_foreground, out).toBe('yes');
    expect(v.rescue_dev_tty, out).toBe('yes');
  });
});
