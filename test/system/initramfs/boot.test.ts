/**
 * The whole early boot: initramfs/init run by busybox sh in a private mount
 * namespace against an empty $ROOT, with switch_root replaced by chroot.
 * init mounts the real /proc, /sys, /dev and /run there, finds a real data
 * partition, builds the root and starts the /sbin/init of the test's base
 * system, which reports what it sees. Then the fatal paths.
 */
import { execa } from 'execa';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BUSYBOX, busyboxSh, keyValues, requireRoot, requireTools } from '../../helpers/initramfs-env.js';
import {
  bitFlippedCopy,
  buildState,
  dataPartition,
  INIT,
  KVER,
  LIB,
  mksquashfs,
  requireZramAndOverlay,
  Sandbox,
  testEnv,
  uniqueLabel,
  writeLowerTree,
} from './fixtures.js';

let sb: Sandbox;
const img: Record<string, string> = {};

/** The base system's init: what the booted system sees, as key=value lines. */
const REPORTING_INIT = `#!/bin/busybox sh
echo "init=$0"
echo "args=$*"
echo "pid1_root_is_overlay=$(awk '$2 == "/" { print $3 }' /proc/self/mounts)"
while IFS= read -r line; do echo "record.$line"; done </run/cairn/boot
echo "persist=$(awk '$2 == "/persist" { print $3, substr($4, 1, 2) }' /proc/self/mounts)"
echo "persist_files=$(ls /persist | tr '\\n' ' ')"
echo "rw=$(awk '$2 == "/run/cairn/rw" { print $3 }' /proc/self/mounts)"
echo "lower=$(awk '$2 == "/run/cairn/lower" { print $3, substr($4, 1, 2) }' /proc/self/mounts)"
echo "upper_hostname=$(cat /run/cairn/rw/upper/etc/hostname)"
echo "lower_hostname=$(cat /run/cairn/lower/etc/hostname)"
echo "hostname=$(cat /etc/hostname)"
echo "gone=$(ls /etc/gone 2>/dev/null || echo absent)"
echo "modules=$(cat /lib/modules/${KVER}/modules.dep)"
echo "firmware=$(cat /lib/firmware/test.bin)"
echo "proc=$(test -e /proc/self/stat && echo yes)"
echo "sys=$(test -d /sys/kernel && echo yes)"
echo "dev=$(test -c /dev/null && echo yes)"
echo "initramfs_mounts=$(awk '$2 ~ /^\\/(proc|sys|dev|run|persist)$/ { n++ } END { print n + 0 }' /proc/self/mounts)"
`;

beforeAll(async () => {
  requireRoot('loop devices, zram and mounts');
  requireTools(['busybox', 'unshare', 'losetup', 'mkfs.ext4', 'mksquashfs', 'unsquashfs', 'setfattr', 'findfs']);
  await requireZramAndOverlay();
  sb = await Sandbox.create('boot');

  await writeLowerTree(sb.path('lower-tree'), REPORTING_INIT);
  await writeFile(sb.path('lower-tree/sbin/other-init'), '#!/bin/busybox sh\necho "init=$0"\necho "args=$*"\n', { mode: 0o755 });
  img.rootfs = sb.path('rootfs.squashfs');
  await mksquashfs(sb.path('lower-tree'), img.rootfs);

  await mkdir(sb.path('modules-tree'));
  await writeFile(sb.path('modules-tree/modules.dep'), 'from the modules image\n');
  img.modules = sb.path('modules.squashfs');
  await mksquashfs(sb.path('modules-tree'), img.modules);
  await mkdir(sb.path('firmware-tree'));
  await writeFile(sb.path('firmware-tree/test.bin'), 'from the firmware image\n');
  img.firmware = sb.path('firmware.squashfs');
  await mksquashfs(sb.path('firmware-tree'), img.firmware);

  img.newest = sb.path('newest.squashfs');
  await buildState(sb, img.newest, 'newest');
  img.backup = sb.path('backup.squashfs');
  await buildState(sb, img.backup, 'backup');
  img.flipped = sb.path('flipped.squashfs');
  await bitFlippedCopy(img.newest, img.flipped);
});

afterEach(() => {
  sb?.resetZram();
});

afterAll(async () => {
  await sb?.cleanup();
});

let rootCount = 0;

/** Runs the real init with CMDLINE and ARGS against an empty root. */
async function runInit(cmdline: string, args: string[] = [], env: Record<string, string> = {}) {
  const root = sb.path(`root-${rootCount++}`);
  await mkdir(root);
  await writeFile(join(root, 'cmdline'), `${cmdline}\n`);
  await writeFile(join(root, 'kmsg'), '');
  const quoted = args.map((a) => `'${a}'`).join(' ');
  const r = await busyboxSh(`exec ${BUSYBOX} sh '${INIT}' ${quoted}`, {
    env: { ...testEnv(sb), ROOT: root, CAIRN_LIB: LIB, CAIRN_CMDLINE: '/cmdline', CAIRN_SWITCH_ROOT: 'chroot', ...env },
  });
  return { ...r, seen: keyValues(r.stdout), kmsg: await readFile(join(root, 'kmsg'), 'utf8') };
}

const FULL = () => ({
  'rootfs.squashfs': img.rootfs!,
  [`modules-${KVER}.squashfs`]: img.modules!,
  'firmware.squashfs': img.firmware!,
  'upperfs.squashfs': img.newest!,
  'upperfs-backup.squashfs': img.backup!,
});

describe('initramfs/init', () => {
  it('boots the newest state on zram and hands over to /sbin/init with everything in place', async () => {
    const part = await dataPartition(sb, FULL());
    const r = await runInit(`BOOT_IMAGE=/vmlinuz cairn.data=LABEL=${part.label} cairn.upper_size=128M quiet`, ['single']);
    expect(r.exitCode, r.stderr).toBe(0);
    const s = r.seen;
    expect(s).toMatchObject({
      init: '/sbin/init',
      args: 'single',
      pid1_root_is_overlay: 'overlay',
      'record.requested': 'default',
      'record.used': 'default',
      'record.state_id': 'id-newest',
      'record.fallback': '',
      'record.upper': 'zram',
      'record.upper_size': String(128 << 20),
      'record.kernel': KVER,
      persist: 'ext4 rw',
      rw: 'ext4',
      lower: 'squashfs ro',
      upper_hostname: 'newest',
      lower_hostname: 'lower',
      hostname: 'newest',
      gone: 'absent',
      modules: 'from the modules image',
      firmware: 'from the firmware image',
      proc: 'yes',
      sys: 'yes',
      dev: 'yes',
      initramfs_mounts: '5',
    });
    expect(s['record.session']).toMatch(/^[0-9a-f-]{36}$/);
    expect(s.persist_files).toContain('rootfs.squashfs');
    expect(s.persist_files).toContain('upperfs.squashfs');
    expect(r.stderr).toContain('cairn: switching to the new root: /sbin/init');
    expect(r.kmsg).toContain(`<6>cairn: data partition: `);
  });

  it('starts the init named by init= and falls back to the backup, on tmpfs, as the command line says', async () => {
    const part = await dataPartition(sb, { ...FULL(), 'upperfs.squashfs': img.flipped! });
    const r = await runInit(`cairn.data=LABEL=${part.label} cairn.upper=tmpfs init=/sbin/other-init`, ['a', 'b c']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.seen).toMatchObject({ init: '/sbin/other-init', args: 'a b c' });
    expect(r.stderr).toContain('warning: upperfs.squashfs fails its checksum (sha256 mismatch); booting the backup');
    expect(r.kmsg).toContain('<4>cairn: warning: upperfs.squashfs fails its checksum');
    expect(r.stderr).toContain('booting the backup (upperfs-backup.squashfs), id id-backup');
    expect(r.stderr).toContain('upper layer: tmpfs');
  });

  it('records a fallback in the boot record the new root sees', async () => {
    const part = await dataPartition(sb, { ...FULL(), 'upperfs.squashfs': img.flipped!, 'upperfs-backup.squashfs': img.flipped! });
    const r = await runInit(`cairn.data=LABEL=${part.label} cairn.upper=tmpfs cairn.upper_size=64M`);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.seen).toMatchObject({
      'record.requested': 'default',
      'record.used': 'clean',
      'record.state_id': '',
      'record.fallback':
        'upperfs.squashfs fails its checksum (sha256 mismatch); upperfs-backup.squashfs fails its checksum (sha256 mismatch)',
      'record.upper': 'tmpfs',
      hostname: 'lower',
    });
  });
});

describe('initramfs/init when nothing can boot', () => {
  it('stops with the reason and powers off when rootfs.squashfs is missing', async () => {
    const { 'rootfs.squashfs': _, ...noRootfs } = FULL();
    const part = await dataPartition(sb, noRootfs);
    const r = await runInit(`cairn.data=LABEL=${part.label}`);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain('cairn: error: rootfs.squashfs is missing from the data partition');
    expect(r.stderr).toContain('cairn: error: cannot boot: the base system (rootfs.squashfs) could not be mounted');
    expect(r.stderr).toContain('boot with cairn.debug=1 for a rescue shell');
    expect(r.stderr).toContain('FAKE-POWEROFF -f');
    expect(r.stderr).not.toContain('FAKE-RESCUE-SHELL');
    expect(r.kmsg).toContain('<3>cairn: error: cannot boot: the base system (rootfs.squashfs) could not be mounted');
    expect(r.stdout).toBe('');
  });

  it('opens a rescue shell, after the reason, with cairn.debug=1', async () => {
    const { 'rootfs.squashfs': _, ...noRootfs } = FULL();
    const part = await dataPartition(sb, noRootfs);
    const r = await runInit(`cairn.data=LABEL=${part.label} cairn.debug=1`);
    expect(r.exitCode).not.toBe(0);
    const reason = r.stderr.indexOf('cannot boot: the base system (rootfs.squashfs) could not be mounted');
    const shell = r.stderr.indexOf('FAKE-RESCUE-SHELL');
    expect(reason).toBeGreaterThan(-1);
    expect(shell).toBeGreaterThan(reason);
    expect(r.stderr.indexOf('FAKE-POWEROFF -f')).toBeGreaterThan(shell);
  });

  it('lists the block devices it saw when the data partition does not show up', async () => {
    const decoy = await dataPartition(sb, {}, { sizeMiB: 8 });
    const wanted = uniqueLabel();
    const started = Date.now();
    const r = await runInit(`cairn.data=LABEL=${wanted}`, [], { CAIRN_FIND_TIMEOUT: '2' });
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain(`waiting up to 2s for the data partition (LABEL=${wanted})`);
    expect(r.stderr).toContain(`error: no data partition LABEL=${wanted} after 2s`);
    expect(r.stderr).toContain('error: block devices seen:');
    expect(r.stderr).toMatch(new RegExp(`error: .*${decoy.dev.slice('/dev/'.length)}: LABEL="${decoy.label}"`));
    expect(r.stderr).toContain(`cannot boot: the data partition (LABEL=${wanted}) was not found`);
  });

  it('stops with the reason when the init to start is not in the new root', async () => {
    const part = await dataPartition(sb, FULL());
    const r = await runInit(`cairn.data=LABEL=${part.label} cairn.upper=tmpfs init=/sbin/nope`);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain('error: /sbin/nope is not in the new root');
    expect(r.stderr).toContain('cannot boot: cannot start /sbin/nope');
  });
});

describe('the initramfs leaves nothing behind', () => {
  it('has no loop device left over a file of its data partitions once its namespace is gone', async () => {
    const part = await dataPartition(sb, FULL());
    const r = await runInit(`cairn.data=LABEL=${part.label} cairn.upper=tmpfs`);
    expect(r.exitCode, r.stderr).toBe(0);
    // The rootfs, modules and firmware loops were set up by mount -o loop
    // with autoclear; the kernel releases them with the last mount.
    let left: string[] = [];
    for (let i = 0; i < 50; i++) {
      const { stdout } = await execa('losetup', ['--list', '--noheadings', '--raw', '-O', 'NAME,BACK-FILE']);
      left = stdout.split('\n').filter((l) => l.includes(`${sb.dir}/root-`));
      if (left.length === 0) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(left).toEqual([]);
  });
});
