/**
 * The data partition: found by label, UUID or device on real loop devices,
 * waited for when it comes late, listed with the others when it never
 * comes; unlocked when it is LUKS; mounted read-write.
 *
 * The kernel of the test machines has no device-mapper, so cryptsetup
 * `open` cannot work here: a stand-in on PATH checks the passphrase and
 * makes the mapping a node of a plain ext4 loop device. `isLuks` is the real
 * cryptsetup on a real LUKS2 header, and the header is checked unchanged.
 */
import { execa } from 'execa';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyValues, requireRoot, requireTools, SYSTEM_PATH } from '../../helpers/initramfs-env.js';
import { dataPartition, Sandbox, uniqueLabel, type DataPartition } from './fixtures.js';

let sb: Sandbox;
let plain: DataPartition;
let rootCount = 0;

beforeAll(async () => {
  requireRoot('loop devices and mounts');
  requireTools(['busybox', 'unshare', 'losetup', 'mkfs.ext4', 'findfs', 'blkid', 'cryptsetup']);
  sb = await Sandbox.create('data');
  await writeFile(sb.path('hello'), 'hello from the data partition\n');
  plain = await dataPartition(sb, { 'user/hello': sb.path('hello') });
});

afterAll(async () => {
  await sb?.cleanup();
});

const SHOW = `
echo "dev=$cairn_data_dev"
awk -v d="$ROOT$CAIRN_DATA_DIR" '$2 == d { print "mount=" $3 " " substr($4, 1, 2) }' /proc/self/mounts
echo "hello=$(cat "$ROOT$CAIRN_DATA_DIR/user/hello")"
touch "$ROOT$CAIRN_DATA_DIR/written" && echo writable=yes
`;

describe('data_find and data_mount', () => {
  it.each([
    ['its label', () => `LABEL=${plain.label}`],
    ['its UUID', () => `UUID=${uuidOf(plain.dev)}`],
    ['its device', () => plain.dev],
  ])('finds the partition by %s and mounts it read-write', async (_by, spec) => {
    const r = await sb.lib(`data_find '${spec()}' || exit 1\ndata_mount "$cairn_data_dev" || exit 2\n${SHOW}`, {
      root: await sb.root(`root-${rootCount++}`),
    });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(keyValues(r.stdout)).toEqual({
      dev: plain.dev,
      mount: 'ext4 rw',
      hello: 'hello from the data partition',
      writable: 'yes',
    });
    expect(r.stderr).not.toContain('waiting');
  });

  it('puts an older stick right: only root lists the partition and reads its saved states; the base images and user/ stay as they were', async () => {
    const state = sb.path('state');
    await writeFile(state, 'a saved state\n', { mode: 0o644 });
    const old = await dataPartition(sb, {
      'upperfs.squashfs': state,
      'upperfs-backup.squashfs': state,
      'upperfs-gen-3.squashfs': state,
      'rootfs.squashfs': state,
      'user/hello': sb.path('hello'),
    });
    const modes = `for f in "" upperfs.squashfs upperfs-backup.squashfs upperfs-gen-3.squashfs rootfs.squashfs user user/hello; do echo "mode $f=$(stat -c %a "$ROOT$CAIRN_DATA_DIR/$f")"; done`;
    const r = await sb.lib(`data_mount '${old.dev}' || exit 2\n${modes}`, { root: await sb.root(`root-${rootCount++}`) });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(keyValues(r.stdout)).toEqual({
      'mode ': '711',
      'mode upperfs.squashfs': '600',
      'mode upperfs-backup.squashfs': '600',
      'mode upperfs-gen-3.squashfs': '600',
      'mode rootfs.squashfs': '644',
      'mode user': '755',
      'mode user/hello': '644',
    });
  });

  it('takes a wait that is not a whole number (CAIRN_FIND_TIMEOUT=30s on the kernel command line) as the default, with a warning, and boots', async () => {
    const r = await sb.lib(`data_find 'LABEL=${plain.label}' || exit 1\necho "dev=$cairn_data_dev"`, {
      root: await sb.root(`root-${rootCount++}`),
      env: { CAIRN_FIND_TIMEOUT: '30s' },
    });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(keyValues(r.stdout).dev).toBe(plain.dev);
    expect(r.stderr).toContain('cairn: warning: CAIRN_FIND_TIMEOUT=30s is not a whole number: using 10');
    expect(r.stderr).not.toMatch(/arithmetic|syntax/i);
  });

  it('waits for a partition that shows up late, as a slow USB stick does', async () => {
    const label = uniqueLabel();
    const late = sb.path('late.img');
    await writeFile(late, '');
    await execa('truncate', ['-s', '16M', late]);
    await execa('mkfs.ext4', ['-q', '-F', '-L', label, late]);
    const root = await sb.root(`root-${rootCount++}`);
    const running = sb.lib(`data_find 'LABEL=${label}' || exit 1\necho "dev=$cairn_data_dev"`, {
      root,
      env: { CAIRN_FIND_TIMEOUT: '20' },
    });
    await new Promise((res) => setTimeout(res, 1500));
    const dev = await sb.attach(late);
    const r = await running;
    expect(r.exitCode, r.stderr).toBe(0);
    expect(keyValues(r.stdout).dev).toBe(dev);
    expect(r.stderr).toContain(`waiting up to 20s for the data partition (LABEL=${label})`);
  });

  it('gives up after CAIRN_FIND_TIMEOUT seconds and lists the block devices it saw', async () => {
    const wanted = uniqueLabel();
    const started = Date.now();
    const r = await sb.lib(`data_find 'LABEL=${wanted}'; echo "rc=$?"`, {
      root: await sb.root(`root-${rootCount++}`),
      binds: ['dev', 'sys'],
      env: { CAIRN_FIND_TIMEOUT: '1' },
    });
    const took = Date.now() - started;
    expect(keyValues(r.stdout).rc).toBe('1');
    expect(took).toBeLessThan(10_000);
    expect(r.stderr).toContain(`error: no data partition LABEL=${wanted} after 1s`);
    expect(r.stderr).toContain('error: block devices seen:');
    expect(r.stderr).toMatch(new RegExp(`error:   .*${plain.dev}: LABEL="${plain.label}"`));
  });

  it('says when no block device at all is there', async () => {
    const root = await sb.root(`root-${rootCount++}`);
    const r = await sb.lib(`data_find /dev/cairn-nothing; echo "rc=$?"`, {
      root,
      binds: [],
      env: { CAIRN_FIND_TIMEOUT: '1' },
    });
    expect(keyValues(r.stdout).rc).toBe('1');
    expect(r.stderr).toContain("error:   none (is the driver for the stick's controller in the initramfs?)");
  });

  it('says what went wrong when the partition is not ext4', async () => {
    const junk = sb.path('junk.img');
    await writeFile(junk, Buffer.alloc(4 << 20));
    const dev = await sb.attach(junk);
    const r = await sb.lib(`data_mount '${dev}'; echo "rc=$?"`, { root: await sb.root(`root-${rootCount++}`) });
    expect(keyValues(r.stdout).rc).toBe('1');
    expect(r.stderr).toContain(`error: cannot mount ${dev} as ext4 on /persist`);
  });
});

describe('data_unlock', () => {
  const PASS = 'correct horse battery staple';
  let luks: { image: string; dev: string; label: string; sum: string };
  let inner: DataPartition;
  let fakeDir: string;
  let log: string;

  const sha = async (file: string) => createHash('sha256').update(await readFile(file)).digest('hex');

  beforeAll(async () => {
    // The LUKS2 partition, labelled, with a fast key derivation.
    const label = uniqueLabel();
    const image = sb.path('luks.img');
    await writeFile(image, '');
    await execa('truncate', ['-s', '32M', image]);
    await execa(
      'cryptsetup',
      ['luksFormat', '-q', '--type', 'luks2', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--label', label, '--key-file=-', image],
      { input: PASS },
    );
    luks = { image, dev: await sb.attach(image), label, sum: await sha(image) };
    // What the opened mapping holds.
    inner = await dataPartition(sb, { 'user/hello': sb.path('hello') });

    fakeDir = sb.path('fake-bin');
    log = sb.path('cryptsetup.log');
    await mkdir(fakeDir);
    await writeFile(
      join(fakeDir, 'cryptsetup'),
      `#!/usr/bin/busybox sh
# A stand-in for cryptsetup on a kernel without device-mapper (see the top).
echo "$*" >>'${log}'
case $1 in
  isLuks) exec /usr/sbin/cryptsetup "$@" ;;
  open)
    [ "$2" = --key-file=- ] && [ "$#" -eq 4 ] || { echo "unexpected: $*" >&2; exit 90; }
    key=$(cat)
    if [ "$key" != '${PASS}' ]; then
      echo "No key available with this passphrase." >&2
      exit 2
    fi
    mkdir -p "$ROOT/dev/mapper" && cp -a '${inner.dev}' "$ROOT/dev/mapper/$4"
    ;;
  *) echo "unexpected: $*" >&2; exit 90 ;;
esac
`,
    );
    await chmod(join(fakeDir, 'cryptsetup'), 0o755);
  });

  /** Runs data_unlock on DEV with INPUT on the console, in a root whose /dev holds DEV's node only. */
  async function unlock(dev: string, input: string) {
    await writeFile(log, '');
    const name = `ct-luks-${rootCount}`;
    const root = await sb.root(`root-${rootCount++}`);
    const r = await sb.lib(
      `cp -a '${dev}' "$ROOT/dev/"
data_unlock '${dev}'; echo "rc=$?"
echo "dev=$cairn_data_dev"
[ "$cairn_data_dev" = '${dev}' ] || { data_mount "$cairn_data_dev" && echo "hello=$(cat "$ROOT$CAIRN_DATA_DIR/user/hello")"; }
`,
      {
        root,
        binds: [],
        input,
        env: { PATH: `${fakeDir}:${SYSTEM_PATH}`, CAIRN_LUKS_NAME: name, cairn_data_dev: dev },
      },
    );
    const calls = (await readFile(log, 'utf8')).trim().split('\n').filter(Boolean);
    return { ...r, v: keyValues(r.stdout), calls, name, root };
  }

  it('finds a LUKS2 partition by its label', async () => {
    const r = await sb.lib(`data_find 'LABEL=${luks.label}' || exit 1\necho "dev=$cairn_data_dev"`, {
      root: await sb.root(`root-${rootCount++}`),
    });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(keyValues(r.stdout).dev).toBe(luks.dev);
  });

  it('asks for the passphrase and unlocks on the third try', async () => {
    const r = await unlock(luks.dev, `wrong\nalso wrong\n${PASS}\n`);
    expect(r.v).toMatchObject({ rc: '0', dev: `/dev/mapper/${r.name}`, hello: 'hello from the data partition' });
    expect(r.stderr).toContain(`${luks.dev} is encrypted (LUKS)`);
    expect(r.stderr).toContain(`Passphrase for ${luks.dev} (1 of 3): `);
    expect(r.stderr).toContain(`Passphrase for ${luks.dev} (3 of 3): `);
    expect(r.stderr.match(/warning: wrong passphrase/g)).toHaveLength(2);
    expect(r.calls.filter((c) => c.startsWith('open'))).toHaveLength(3);
  });

  it('gives up after three wrong passphrases, and changes nothing on the partition', async () => {
    const r = await unlock(luks.dev, 'one\ntwo\nthree\nfour\n');
    expect(r.v).toMatchObject({ rc: '1', dev: luks.dev });
    expect(r.stderr).toContain(`error: could not unlock ${luks.dev}`);
    expect(r.calls.filter((c) => c.startsWith('open'))).toHaveLength(3);
    // Only ever asked whether it is LUKS and tried to open it: no format, no repair.
    expect(r.calls.every((c) => /^(isLuks|open --key-file=-) /.test(c))).toBe(true);
    expect(await sha(luks.image)).toBe(luks.sum);
  });

  it('stops asking when the console has nothing more to say', async () => {
    const r = await unlock(luks.dev, 'wrong\n');
    expect(r.v.rc).toBe('1');
    expect(r.calls.filter((c) => c.startsWith('open'))).toHaveLength(1);
  });

  it('leaves a partition that is not LUKS alone, asking nothing', async () => {
    const r = await unlock(plain.dev, '');
    expect(r.v).toMatchObject({ rc: '0', dev: plain.dev });
    expect(r.stderr).not.toContain('Passphrase');
    expect(r.calls).toEqual([`isLuks ${r.root}${plain.dev}`]);
  });
});

/** The UUID of DEV, read outside any namespace. */
function uuidOf(dev: string): string {
  return execFileSync('blkid', ['-o', 'value', '-s', 'UUID', dev], { encoding: 'utf8' }).trim();
}

/**
 * The check before the mount (data_check): the real e2fsck -p on real ext4
 * loop devices left as a power cut leaves them, marked with errors, or
 * damaged beyond what e2fsck repairs unattended. Only the case of a check
 * that runs past its time uses a stand-in e2fsck that sleeps.
 */
describe('data_check', () => {
  const MOUNT = `awk -v d="$ROOT$CAIRN_DATA_DIR" '$2 == d { print "mount=" substr($4, 1, 2) }' /proc/self/mounts
echo "check=$cairn_data_check"
touch "$ROOT$CAIRN_DATA_DIR/written" 2>/dev/null && echo writable=yes || echo writable=no`;
  /** A data partition whose file system debugfs then changes with REQUESTS (as root, unmounted). */
  const partition = async (...requests: string[]) => {
    const p = await dataPartition(sb, { 'user/hello': sb.path('hello') });
    for (const r of requests) await execa('debugfs', ['-w', '-R', r, p.dev]);
    return p;
  };
  const boot = async (dev: string, env: Record<string, string> = {}) => {
    const r = await sb.lib(`data_check '${dev}'\ndata_mount '${dev}' || exit 2\n${MOUNT}`, { root: await sb.root(`root-${rootCount++}`), env });
    return { ...r, v: keyValues(r.stdout) };
  };

  it('mounts a cleanly unmounted partition read-write, saying nothing', async () => {
    const r = await boot(plain.dev);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.v).toMatchObject({ mount: 'rw', check: 'clean', writable: 'yes' });
    expect(r.stderr).not.toMatch(/e2fsck|error|warning/);
  });

  it('checks and repairs a partition a power cut left not cleanly unmounted, says so, and mounts it read-write', async () => {
    const p = await partition('ssv state 0');
    const r = await boot(p.dev);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.v).toMatchObject({ mount: 'rw', writable: 'yes' });
    expect(r.v.check).toMatch(/^repaired by e2fsck -p \(.*was not cleanly unmounted, check forced/);
    expect(r.stderr).toMatch(/the data partition .* was not cleanly unmounted or had errors: repaired by e2fsck -p/);
    expect((await execa('e2fsck', ['-n', p.dev], { reject: false })).exitCode).toBe(0);
  });

  it('replays the journal of a partition cut off while mounted, says so, and mounts it read-write', async () => {
    // The image as a power cut leaves it: copied while mounted, after a write.
    const image = sb.path('cut.img');
    await execa('truncate', ['-s', '32M', image]);
    await execa('mkfs.ext4', ['-q', '-F', image]);
    const mnt = sb.path('cut-mnt');
    await mkdir(mnt, { recursive: true });
    await execa('mount', ['-o', 'loop', image, mnt]);
    try {
      await writeFile(join(mnt, 'written'), 'before the cut\n');
      await execa('sync');
      await execa('cp', [image, sb.path('cut-copy.img')]);
    } finally {
      await execa('umount', [mnt]);
    }
    const dev = await sb.attach(sb.path('cut-copy.img'));
    expect((await execa('dumpe2fs', ['-h', dev], { stderr: 'ignore' })).stdout).toMatch(/needs_recovery/);
    const r = await boot(dev);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.v).toMatchObject({ mount: 'rw', writable: 'yes', check: 'journal replayed by e2fsck -p (it was not cleanly unmounted)' });
    expect(r.stderr).toContain(`the data partition ${dev}: journal replayed by e2fsck -p`);
  });

  it('mounts read-only a partition with errors e2fsck -p does not repair, and says what to do', async () => {
    // Two files sharing a block, which e2fsck leaves to a person: block
    // maps (no extents) so that debugfs can point one file at the other's.
    const stage = sb.path('stage-shared');
    await mkdir(join(stage, 'user'), { recursive: true });
    await writeFile(join(stage, 'user/hello'), 'hello\n');
    await writeFile(join(stage, 'user/other'), 'other\n');
    const image = sb.path('shared-block.img');
    await execa('truncate', ['-s', '32M', image]);
    await execa('mkfs.ext4', ['-q', '-F', '-O', '^extent,^64bit', '-d', stage, image]);
    const dev = await sb.attach(image);
    const block = (await execa('debugfs', ['-R', 'bmap /user/other 0', dev])).stdout.trim();
    await execa('debugfs', ['-w', '-R', `sif /user/hello block[0] ${block}`, dev]);
    await execa('debugfs', ['-w', '-R', 'ssv state 2', dev]);
    const p = { dev };
    const r = await boot(p.dev);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.v).toMatchObject({ mount: 'ro', writable: 'no' });
    expect(r.v.check).toMatch(/^errors left \(e2fsck -p exited 4: .*Multiply-claimed block.*UNEXPECTED INCONSISTENCY.*\); mounted read-only$/);
    expect(r.stderr).toContain(`error: the data partition ${p.dev} has errors that e2fsck -p does not repair by itself`);
    expect(r.stderr).toContain('nothing is saved until it is repaired');
    expect(r.stderr).toContain(`run e2fsck -f ${p.dev} from the rescue shell`);
  });

  it('gives up on a check that runs past CAIRN_FSCK_TIMEOUT and mounts read-only (a stand-in e2fsck that sleeps)', async () => {
    const bin = sb.path('slow-e2fsck');
    await mkdir(bin, { recursive: true });
    await writeFile(join(bin, 'e2fsck'), '#!/bin/sh\nexec sleep 30\n');
    await chmod(join(bin, 'e2fsck'), 0o755);
    const t0 = Date.now();
    const r = await boot(plain.dev, { CAIRN_FSCK_TIMEOUT: '1', PATH: `${bin}:${SYSTEM_PATH}` });
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(r.v).toMatchObject({ mount: 'ro', check: 'errors left (e2fsck -p did not finish within 1s); mounted read-only' });
  });

  it('mounts without a check where the initramfs has no e2fsck, and says so', async () => {
    const r = await sb.lib(`PATH=/nonexistent data_check '${plain.dev}'\ndata_mount '${plain.dev}' || exit 2\n${MOUNT}`, {
      root: await sb.root(`root-${rootCount++}`),
    });
    expect(keyValues(r.stdout)).toMatchObject({ mount: 'rw', check: 'not checked (this initramfs has no e2fsck)' });
    expect(r.stderr).toContain('warning: the data partition is not checked (this initramfs has no e2fsck)');
  });
});
