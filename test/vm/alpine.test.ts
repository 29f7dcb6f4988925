/**
 * The alpine base built from Alpine's own packages and booted. The image is
 * made by `cairn image build --base alpine` with Alpine's real apk (apk-tools
 * 2.14.4 from the 3.20.3 minirootfs) bootstrapping the root from a local
 * repository of Alpine 3.19's real packages (../shared/alpine, each keeping
 * Alpine's signature: alpine-base, busybox, openrc, musl, apk-tools,
 * e2fsprogs, mount, lsblk, sfdisk, ...) and STAND-INS for what is not there
 * (the kernel, nodejs, squashfs-tools, attr, kmod, mtools, busybox-static,
 * util-linux's losetup, setpriv, findmnt, blkid and its meta package),
 * signed with a test key (test/helpers/alpine-real-repo.ts). It is booted in
 * QEMU (SeaBIOS, GRUB, the serial console) twice: the first boot logs in,
 * runs `cairn status`, writes a file and powers off (the save, the data
 * partition left clean, read on the host); the second finds the file and
 * the data partition clean, and installs Alpine's partx with
 * `apk add` through cairn's shim from a second local repository on a
 * second disk. Each phase's time is printed.
 */
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { packageIdentity, readApk } from '../../src/apk/read.js';
import { SHIM_MARKER, SHIM_PATH } from '../../src/apk/shim.js';
import { planLayout } from '../../src/image/layout.js';
import { RUNTIME } from '../../src/names.js';
import { requireSharedAlpine, SHARED_ALPINE, writeRealAlpineRepo, type RealAlpineRepo } from '../helpers/alpine-real-repo.js';
import { CLI } from '../helpers/system.js';
import { requireVmHost } from '../helpers/vm-fixtures.js';
import { CACHE, debianCloudKernel } from '../helpers/vm-kernel.js';
import { GRUB_BANNER, Vm } from '../helpers/vm-qemu.js';
import { Session } from '../helpers/vm-session.js';
import { MENU, PASSWORD } from '../helpers/vm-stick.js';

const WORK = join(CACHE, 'alpine');
const SIZE_MIB = 1024;
/** Alpine's package the user adds on the running stick, left out of the build's repository. */
const LATER = 'partx';

let repo: RealAlpineRepo;
let image: string;
let laterDisk: string;
const vms: Vm[] = [];

function seconds(since: number): string {
  return ((Date.now() - since) / 1000).toFixed(1);
}

/** Powers on the stick, picks GRUB's default entry, logs in as root. */
async function boot(name: string): Promise<Session> {
  const started = Date.now();
  const vm = await Vm.start({ name: `alpine-${name}`, stick: { image, firmware: 'bios', persist: true, bus: 'virtio' }, memoryMiB: 1024, disks: [laterDisk] });
  vms.push(vm);
  onTestFailed(() => {
    process.stderr.write(`\n----- console of "${name}" (${vm.logFile}) -----\n${vm.output.slice(-20_000)}\n----- end of console -----\n`);
  });
  const s = new Session(vm);
  await s.pickEntry(MENU, 0);
  await s.login('root', PASSWORD);
  console.log(`boot ${name}: power-on to a root shell in ${seconds(started)} s`);
  return s;
}

/** Powers off; returns the shutdown's console text and prints its time. */
async function powerOff(s: Session, name: string): Promise<string> {
  const started = Date.now();
  const text = await s.powerOff();
  console.log(`boot ${name}: poweroff (save included) in ${seconds(started)} s, ${s.vm.seconds()} s from power-on`);
  return text;
}

/**
 * The data partition's ext4 superblock, read on the host after a poweroff:
 * a partition left mounted (or remounted read-only too late) is marked
 * needs_recovery. The next boot's e2fsck -p would replay the journal before
 * the kernel mounts it and say so (data_check "journal replayed").
 */
async function dataSuperblock(): Promise<string> {
  const offset = planLayout(SIZE_MIB * 1024 * 1024, 256).data.startSector * 512;
  return (await execa('dumpe2fs', ['-h', `${image}?offset=${offset}`])).stdout;
}

/** The file of Alpine's package NAME in ../shared/alpine (one version of each is there). */
function alpinePackageFile(name: string): string {
  const dir = join(SHARED_ALPINE, 'packages');
  const found = readdirSync(dir).filter((f) => f.startsWith(`${name}-`) && /^[0-9]/.test(f.slice(name.length + 1)));
  if (found.length !== 1) throw new Error(`expected one ${name} package in ${dir}, found ${found.join(', ') || 'none'}`);
  return join(dir, found[0]!);
}

/** sha256 of a file in Alpine's package NAME. */
async function fileInPackage(name: string, path: string): Promise<string> {
  const r = await execa('tar', ['-xzOf', alpinePackageFile(name), '--ignore-zeros', '--warning=no-unknown-keyword', path], { encoding: 'buffer' });
  return createHash('sha256').update(r.stdout).digest('hex');
}

describe.sequential('an alpine stick from Alpine\'s own packages (apk-tools, busybox, OpenRC, musl) booted in QEMU', () => {
  beforeAll(async () => {
    requireVmHost();
    requireSharedAlpine();
    rmSync(WORK, { recursive: true, force: true });
    mkdirSync(WORK, { recursive: true });
    let t = Date.now();
    repo = await writeRealAlpineRepo(join(WORK, 'fixture'), await debianCloudKernel(), [LATER]);
    console.log(`repository (${repo.real.length} of Alpine's packages, ${repo.standIns.length} stand-ins): ${seconds(t)} s`);

    t = Date.now();
    image = join(WORK, 'cairn.img');
    const r = await execa(
      process.execPath,
      [CLI, 'image', 'build', '--base', 'alpine', '--kernel', 'linux-virt', '--apk', repo.apk, '--repository', repo.dir, '--apk-keys', repo.keysDir,
        '--output', image, '--size', String(SIZE_MIB), '--password', PASSWORD, '--console', 'serial', '--swap', '0',
        '--cache', join(WORK, 'cache'), '--work', join(WORK, 'build')],
      { reject: false, all: true, stdin: 'ignore' },
    );
    if (r.exitCode !== 0) throw new Error(`cairn image build --base alpine failed:\n${r.all}`);
    console.log(`image build: ${seconds(t)} s`);

    laterDisk = join(WORK, 'later.img');
    await execa('mke2fs', ['-q', '-t', 'ext4', '-d', repo.later, laterDisk, '16M']);
  }, 900_000);

  afterAll(async () => {
    for (const vm of vms) await vm.stop();
  });

  it('apk installed Alpine\'s packages as Alpine signed them, and the initramfs carries Alpine\'s busybox', async () => {
    // apk's database records each package by the identity of the file it installed.
    const db = readFileSync(join(WORK, 'build', 'root', 'lib/apk/db/installed'), 'utf8').split('\n\n');
    const identities = new Map(db.map((b) => [/^P:(.*)$/m.exec(b)?.[1], /^C:(.*)$/m.exec(b)?.[1]]));
    for (const name of ['alpine-base', 'busybox', 'openrc', 'musl', 'apk-tools', 'e2fsprogs', 'mount', 'lsblk', 'sfdisk', 'libblkid']) {
      const apk = readApk(readFileSync(alpinePackageFile(name)), name);
      expect(apk.signatures.map((sig) => sig.keyName), name).toEqual(['alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub']);
      expect(identities.get(name), name).toBe(packageIdentity(apk.control.compressed));
    }
    expect(identities.has(LATER)).toBe(false);

    const esp = `${image}@@${planLayout(SIZE_MIB * 1024 * 1024, 256).esp.startSector * 512}`;
    const listing = await execa('mdir', ['-b', '-i', esp, '::/'], { env: { MTOOLS_SKIP_CHECK: '1' } });
    const initrd = listing.stdout.split('\n').map((l) => l.trim().replace(/^::\//, '')).find((f) => f.startsWith('initramfs-'));
    expect(initrd).toBeDefined();
    const busybox = await execa('sh', ['-c', `mtype -i '${esp}' '::/${initrd}' | gzip -dc | cpio -i --to-stdout --quiet bin/busybox`], {
      env: { MTOOLS_SKIP_CHECK: '1' },
      encoding: 'buffer',
    });
    expect(createHash('sha256').update(busybox.stdout).digest('hex')).toBe(await fileInPackage('busybox', 'bin/busybox'));
  });

  it('1. first boot: GRUB, the initramfs, Alpine\'s OpenRC, login, cairn status; a file written is saved at poweroff and /persist is left clean', async () => {
    const s = await boot('1');
    expect(s.vm.output).toMatch(GRUB_BANNER);
    expect(s.vm.output).toContain('cairn: switching to the new root');
    expect(s.vm.output).toMatch(/OpenRC 0\.52\.1 is starting up/);
    expect(s.vm.output).toContain('Welcome to Alpine Linux 3.19');
    // No service of the boot failed (mdev's hotplug helper aside: the stand-in kernel has no /proc/sys/kernel/hotplug).
    expect(s.vm.output.replace(/.*\/proc\/sys\/kernel\/hotplug.*\n.*\[ !! \]/g, '')).not.toContain('[ !! ]');

    const status = await s.ok('cairn status');
    expect(status).toMatch(/booted: default, nothing saved yet/);
    expect(status).toMatch(/upper layer: zram/);
    expect(await s.ok('cat /etc/alpine-release')).toBe('3.19.1');
    await s.ok('echo "kept on the alpine stick" > /root/alpine-file');

    const shutdown = await powerOff(s, '1');
    expect(shutdown).toMatch(/Saving this session to the stick/);
    expect(shutdown).toMatch(/saved [\d.]+ \w+ \(\d+ files/);
    expect(shutdown).toMatch(/Remounting \/persist read only \.\.\. \[ ok \]/);
    expect(shutdown).not.toMatch(/in use but fuser finds nothing/);
    const superblock = await dataSuperblock();
    expect(superblock).toMatch(/^Filesystem state:\s+clean$/m);
    expect(superblock).toMatch(/^Filesystem features:\s+has_journal/m);
    expect(superblock).not.toMatch(/^Filesystem features:.*needs_recovery/m);
  }, 900_000);

  it('2. second boot: the file is there, the data partition is clean, and apk add through the shim installs Alpine\'s partx from a local repository', async () => {
    const s = await boot('2');
    expect(await s.ok('cat /root/alpine-file')).toBe('kept on the alpine stick');
    const status = await s.ok('cairn status');
    expect(status).toMatch(/booted: default\n/);
    // What the boot says of the data partition (dataSuperblock above tells whether the last poweroff left it clean).
    expect(status).not.toMatch(/data partition at boot|NEEDS REPAIR/);
    expect(s.vm.output).not.toMatch(/was not cleanly unmounted/);
    expect(await s.ok(`grep '^data_check=' ${RUNTIME.bootRecord}`)).toBe('data_check=clean');
    const ext4 = await s.ok('dmesg | grep "EXT4-fs (vda2)"');
    expect(ext4).toMatch(/mounted filesystem/);
    expect(ext4).not.toMatch(/recover|orphan/i);

    expect(await s.ok('command -v apk')).toBe(SHIM_PATH);
    expect((await s.run(`grep -q '${SHIM_MARKER}' ${SHIM_PATH}`)).code).toBe(0);
    await s.ok('mkdir -p /mnt/later && mount -o ro /dev/vdb /mnt/later && echo /mnt/later > /etc/apk/repositories');
    const t = Date.now();
    const add = await s.run(`apk add ${LATER}`, 300_000);
    console.log(`apk add ${LATER}: ${seconds(t)} s`);
    expect(add.code, add.out).toBe(0);
    expect(add.out).toMatch(/Installing partx \(2\.39\.3-r0\)/);
    expect(await s.ok('partx --version')).toBe('partx from util-linux 2.39.3');
    // A session booted from a saved state: its shutdown save is a checkpoint over it (docs/saving.md "Checkpoints").
    expect(await powerOff(s, '2')).toMatch(/saved a checkpoint of [\d.]+ \w+ \(\d+ entries changed\)/);
    expect(await dataSuperblock()).not.toMatch(/^Filesystem features:.*needs_recovery/m);
  }, 900_000);
});
