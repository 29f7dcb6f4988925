/**
 * `cairn image build --base alpine`, the real CLI (dist/cairn.mjs), with apk
 * a STAND-IN (test/helpers/apk-standin.ts): apk-tools is not packaged in
 * Debian and Alpine's mirrors cannot be reached from these machines. The
 * stand-in's `add --initdb` reads the repository's signed APKINDEX, refuses
 * packages not signed by a trusted key, and extracts the packages into the
 * new root; it runs no package scripts. The packages are placeholders shaped
 * like Alpine's (test/helpers/alpine-repo.ts), the kernel Debian's cloud
 * kernel laid out as linux-virt. The image is checked as a user would check
 * it without booting it (no Alpine userspace here to boot): the partition
 * table, the ESP with mtools, the data partition through a read-only loop
 * mount, the squashfs images with unsquashfs.
 */
import { execa } from 'execa';
import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOCAL_KEY } from '../../src/apk/localKey.js';
import { SHIM_MARKER, SHIM_PATH } from '../../src/apk/shim.js';
import { ESP_PATHS } from '../../src/esp/bootState.js';
import { DATA, LABELS, modulesImage } from '../../src/names.js';
import { FIRMWARE_FILE, REPO_KEY_NAME, writeTestRepo, type TestRepo } from '../helpers/alpine-repo.js';
import { standinApk } from '../helpers/apk-harness.js';
import { CLI, Scratch } from '../helpers/system.js';
import { requireHostTools } from '../helpers/vm-fixtures.js';
import { debianCloudKernel, type TestKernel } from '../helpers/vm-kernel.js';

const PATH = '/usr/sbin:/usr/bin:/sbin:/bin';
let scratch: Scratch;
let repo: TestRepo;
let kernel: TestKernel;
let apk: string;

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('these tests need root (files owned by root, loop mounts): run them as root');
  requireHostTools('these tests', ['mksquashfs', 'unsquashfs', 'mdir', 'mtype', 'minfo', 'depmod', 'mkfs.vfat', 'mkfs.ext4', 'sfdisk', 'losetup', 'busybox', 'grub-mkimage', 'openssl']);
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build`);
  for (const d of PATH.split(':')) if (existsSync(join(d, 'apk'))) throw new Error(`${d}/apk exists: these tests expect a build machine without apk`);
  scratch = new Scratch();
  kernel = await debianCloudKernel();
  repo = await writeTestRepo(scratch.path('fixture'), kernel, '/bin/busybox');
  apk = await standinApk();
}, 600_000);

afterAll(async () => {
  await scratch?.cleanup();
});

interface Build {
  exitCode: number;
  stdout: string;
  stderr: string;
  seconds: number;
}

async function build(args: string[], env: Record<string, string> = {}): Promise<Build> {
  const started = Date.now();
  const r = await execa(process.execPath, [CLI, 'image', 'build', '--base', 'alpine', '--size', '1024', '--kernel', 'linux-virt', ...args], {
    reject: false,
    stdin: 'ignore',
    env: { PATH, ...env },
    extendEnv: false,
  });
  return { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr, seconds: (Date.now() - started) / 1000 };
}

describe('alpine base: bad input stops the build before anything is written', () => {
  const cases: { name: string; args: () => string[]; message: RegExp }[] = [
    { name: 'no apk given and none on PATH', args: () => ['--repository', repo.dir, '--apk-keys', repo.keysDir], message: /apk was not found[\s\S]*--apk PATH/ },
    { name: 'an --apk that is not a program', args: () => ['--apk', '/nonexistent/apk.static', '--repository', repo.dir, '--apk-keys', repo.keysDir], message: /--apk \/nonexistent\/apk.static is not an executable file/ },
    { name: 'a repository directory that does not exist', args: () => ['--apk', apk, '--repository', scratch.path('nowhere'), '--apk-keys', repo.keysDir], message: /is not an Alpine repository: .*x86_64\/APKINDEX.tar.gz is missing/ },
    { name: 'an unreachable repository URL', args: () => ['--apk', apk, '--repository', 'http://127.0.0.1:9/alpine/v3.20/main', '--apk-keys', repo.keysDir], message: /repository http:\/\/127.0.0.1:9\/alpine\/v3.20\/main is not reachable/ },
    { name: 'no trusted keys', args: () => ['--apk', apk, '--repository', repo.dir, '--apk-keys', scratch.path('empty-keys')], message: /no trusted Alpine keys \(\*.rsa.pub\) in .*empty-keys/ },
    { name: 'keys that did not sign the repository', args: () => ['--apk', apk, '--repository', repo.dir, '--apk-keys', scratch.path('other-keys')], message: /is not signed by a key in .*other-keys/ },
    { name: 'an output in a directory that does not exist', args: () => ['--apk', apk, '--repository', repo.dir, '--apk-keys', repo.keysDir, '--output', scratch.path('no-such-dir', 'x.img')], message: /no-such-dir: no such directory for the image[\s\S]*mkdir -p/ },
    { name: 'a kernel that is not an Alpine kernel', args: () => ['--apk', apk, '--repository', repo.dir, '--apk-keys', repo.keysDir, '--kernel', 'linux-image-amd64'], message: /--kernel linux-image-amd64 is not an Alpine kernel/ },
  ];
  for (const c of cases) {
    it(`refuses ${c.name}`, async () => {
      mkdirSync(scratch.path('empty-keys'), { recursive: true });
      mkdirSync(scratch.path('other-keys'), { recursive: true });
      // Another key under the name the index's signature gives.
      writeFileSync(scratch.path('other-keys', REPO_KEY_NAME), generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }));
      const cache = scratch.path('bad-cache');
      const output = scratch.path('bad.img');
      // The kernel-name case passes its own --kernel after the default one.
      const r = await build(['--output', output, '--cache', cache, ...c.args()]);
      expect(r.exitCode, r.stderr).not.toBe(0);
      expect(r.stderr).toMatch(c.message);
      expect(existsSync(output)).toBe(false);
      expect(existsSync(`${output}.partial`)).toBe(false);
      expect(existsSync(cache)).toBe(false);
    });
  }
});

describe('build-image.sh --base alpine: bad input stops it before it installs or writes anything', () => {
  const cases: { name: string; args: () => string[]; message: RegExp }[] = [
    { name: 'no apk on a machine without one', args: () => ['--repository', repo.dir, '--apk-keys', repo.keysDir], message: /needs apk-tools, and this machine has none[\s\S]*--apk PATH/ },
    { name: 'a repository directory without an index', args: () => ['--apk', apk, '--repository', scratch.path('nowhere'), '--apk-keys', repo.keysDir], message: /is not an Alpine repository: .*x86_64\/APKINDEX.tar.gz is missing/ },
    { name: 'no trusted keys', args: () => ['--apk', apk, '--repository', repo.dir, '--apk-keys', scratch.path('empty-keys')], message: /no trusted Alpine keys in .*empty-keys/ },
  ];
  for (const c of cases) {
    it(`refuses ${c.name}`, async () => {
      mkdirSync(scratch.path('empty-keys'), { recursive: true });
      const output = scratch.path('sh.img');
      const r = await execa('sh', ['build-image.sh', '--base', 'alpine', '--yes', '--output', output, '--cache', scratch.path('sh-cache'), ...c.args()], {
        reject: false,
        stdin: 'ignore',
        env: { PATH },
        extendEnv: false,
      });
      expect(r.exitCode, r.stderr).toBe(1);
      expect(r.stderr).toMatch(c.message);
      expect(existsSync(output)).toBe(false);
      expect(existsSync(scratch.path('sh-cache'))).toBe(false);
    });
  }
});

describe('alpine base: an image from a local repository', () => {
  const cache = () => scratch.path('cache');
  const output = () => scratch.path('alpine.img');
  const log = () => scratch.path('apk-calls.jsonl');
  let first: Build;

  it('builds, bootstrapping the root with apk from the repository', async () => {
    first = await build(
      ['--output', output(), '--cache', cache(), '--apk', apk, '--repository', repo.dir, '--apk-keys', repo.keysDir, '--user', 'ada', '--password', 'secret', '--swap', '0', '--json'],
      { STANDIN_LOG: log() },
    );
    expect(first.exitCode, first.stderr).toBe(0);
    const report = JSON.parse(first.stdout) as { kernelVersion: string; flavor: string };
    expect(report.kernelVersion).toBe(kernel.version);
    // The flavor as the kernel package names it (usr/share/kernel/virt/kernel.release), as mkinitfs reads it.
    expect(report.flavor).toBe('virt');
    const calls = readFileSync(log(), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as string[]);
    expect(calls).toHaveLength(1);
    expect(calls[0]).toEqual(expect.arrayContaining(['add', '--initdb', '--arch', 'x86_64', '--repositories-file', '/dev/null', '--repository', repo.dir, 'linux-virt', 'alpine-base', 'nodejs']));
    expect(calls[0]![calls[0]!.indexOf('--cache-dir') + 1]).toBe(join(cache(), 'apk'));
    console.log(`first build: ${first.seconds.toFixed(1)} s`);
  });

  it('has the GPT partitions and labels a stick needs', async () => {
    const table = JSON.parse((await execa('sfdisk', ['--json', output()])).stdout) as { partitiontable: { label: string; partitions: { name: string; type: string }[] } };
    expect(table.partitiontable.label).toBe('gpt');
    expect(table.partitiontable.partitions.map((p) => p.name).sort()).toEqual([LABELS.data, LABELS.esp, 'bios-boot'].sort());
  });

  it('puts the kernel, its initramfs, the menu and the boot record on the ESP', async () => {
    const esp = await partitionFile(output(), LABELS.esp, scratch.path('esp.fat'));
    const env = { MTOOLS_SKIP_CHECK: '1' };
    expect((await execa('minfo', ['-i', esp, '::'], { env })).stdout).toMatch(new RegExp(`disk label="${LABELS.esp} *"`));
    const kernelOnEsp = scratch.path('vmlinuz');
    await execa('mcopy', ['-i', esp, `::/${ESP_PATHS.kernel(kernel.version)}`, kernelOnEsp], { env });
    expect(readFileSync(kernelOnEsp).equals(readFileSync(kernel.vmlinuz))).toBe(true);
    const listing = (await execa('mdir', ['-i', esp, '-/', '-b', '::'], { env })).stdout;
    for (const f of [ESP_PATHS.initrd(kernel.version), 'EFI/BOOT/BOOTX64.EFI', ESP_PATHS.menu, ESP_PATHS.bootState]) expect(listing).toContain(`::/${f}`);
    const menu = (await execa('mtype', ['-i', esp, `::/${ESP_PATHS.menu}`], { env })).stdout;
    expect(menu).toContain(`/${ESP_PATHS.kernel(kernel.version)}`);
    expect(menu).toContain(`LABEL=${LABELS.data}`);
  });

  it('has the base image, the kernel\'s modules, the firmware and a root-only private key on the data partition', async () => {
    await withDataPartition(output(), async (data) => {
      // Only root reads the partition's root from the first boot on; others may pass through to user/.
      expect(statSync(data).mode & 0o777).toBe(0o711);
      const rootfs = join(data, DATA.rootfs);
      const files = await listing(rootfs);
      // The runtime and the apk shim ahead of the real apk.
      expect(files).toContain('usr/lib/cairn/cairn.mjs');
      expect(files).toContain('usr/lib/cairn/cairn.cjs');
      expect(await cat(rootfs, SHIM_PATH.slice(1))).toContain(SHIM_MARKER);
      const profile = await cat(rootfs, 'etc/profile');
      expect(profile.indexOf('/usr/local/sbin')).toBeLessThan(profile.indexOf(':/sbin'));
      expect(await cat(rootfs, 'etc/profile.d/cairn-apk.sh')).toContain('PATH="/usr/local/sbin:$PATH"');
      // Services in Alpine's runlevels, the save between killprocs and mount-ro, then the data partition made read-only.
      const links = (await execa('unsquashfs', ['-lls', '-d', '', rootfs, 'etc/runlevels'])).stdout;
      for (const [level, name] of [['shutdown', 'cairn-save'], ['shutdown', 'cairn-readonly'], ['default', 'cairn-userdirs'], ['default', 'cairn-swap'], ['default', 'cairn-boot-good'], ['default', 'cairn-checkpoint'], ['sysinit', 'devfs'], ['sysinit', 'mdev'], ['boot', 'bootmisc'], ['shutdown', 'killprocs'], ['shutdown', 'mount-ro']]) {
        expect(links).toContain(`/etc/runlevels/${level}/${name} -> /etc/init.d/${name}`);
      }
      // The checkpoint timer's loop, where its service runs it.
      expect(files).toContain('usr/lib/cairn/checkpoint-loop');
      expect(await cat(rootfs, 'etc/conf.d/cairn-save')).toMatch(/^save_after=killprocs\nsave_before=mount-ro$/m);
      expect(await cat(rootfs, 'etc/conf.d/cairn-readonly')).toMatch(/^readonly_after="killprocs cairn-save"\nreadonly_before=mount-ro$/m);
      expect(await cat(rootfs, 'etc/conf.d/localmount')).toMatch(/^no_umounts="\/persist:/m);
      expect(await cat(rootfs, 'etc/inittab')).toMatch(/^ttyS0::respawn:\/sbin\/getty -L 115200 ttyS0 vt100$/m);
      // apk: the stick's repositories, its local key trusted, the packages recorded.
      expect(await cat(rootfs, 'etc/apk/repositories')).toBe('https://dl-cdn.alpinelinux.org/alpine/v3.20/main\nhttps://dl-cdn.alpinelinux.org/alpine/v3.20/community\n');
      expect(files).toContain(`etc/apk/keys/${LOCAL_KEY.publicName}`);
      expect(await cat(rootfs, 'lib/apk/db/installed')).toMatch(/^P:linux-virt$/m);
      expect((await cat(rootfs, 'etc/apk/world')).split('\n')).toContain('linux-virt');
      // The user, with the password hashed for both the user and root.
      expect(await cat(rootfs, 'etc/passwd')).toMatch(/^ada:x:1000:1000:ada:\/home\/ada:\/bin\/sh$/m);
      const shadow = await cat(rootfs, 'etc/shadow');
      expect(shadow).toMatch(/^ada:\$6\$[^:]+:/m);
      expect(shadow).toMatch(/^root:\$6\$[^:]+:/m);
      // What lives in images of its own is not in the base image.
      expect(files.filter((f) => f.startsWith(`lib/modules/${kernel.version}/`))).toEqual([]);
      expect(files.filter((f) => f.startsWith('lib/firmware/'))).toEqual([]);
      expect(files.filter((f) => f.startsWith('boot/'))).toEqual([]);

      const modules = await listing(join(data, modulesImage(kernel.version)));
      expect(modules).toContain('modules.dep');
      expect(modules.some((f) => /^kernel\/fs\/squashfs\/squashfs\.ko/.test(f))).toBe(true);
      expect(await listing(join(data, DATA.firmware))).toContain(FIRMWARE_FILE);

      const privateKey = join(data, LOCAL_KEY.dir, LOCAL_KEY.privateName);
      expect(statSync(privateKey).mode & 0o777).toBe(0o600);
      expect(statSync(join(data, LOCAL_KEY.dir)).mode & 0o777).toBe(0o700);
      expect(statSync(privateKey).uid).toBe(0);
      const publicPem = await cat(rootfs, `etc/apk/keys/${LOCAL_KEY.publicName}`);
      expect(createPublicKey(createPrivateKey(readFileSync(privateKey))).export({ type: 'spki', format: 'pem' })).toBe(publicPem);
      expect(statSync(join(data, DATA.userDir)).uid).toBe(1000);
    });
  });

  it('builds again from the cache without running apk', async () => {
    const second = await build(
      ['--output', scratch.path('again.img'), '--cache', cache(), '--apk', apk, '--repository', repo.dir, '--apk-keys', repo.keysDir, '--swap', '0'],
      { STANDIN_LOG: log() },
    );
    expect(second.exitCode, second.stderr).toBe(0);
    const calls = readFileSync(log(), 'utf8').trim().split('\n');
    expect(calls).toHaveLength(1);
    console.log(`second build: ${second.seconds.toFixed(1)} s (first ${first.seconds.toFixed(1)} s)`);
  });
});

/** The paths in a squashfs image, relative to its root. */
async function listing(image: string): Promise<string[]> {
  const out = (await execa('unsquashfs', ['-l', '-d', '', image])).stdout;
  return out.split('\n').filter((l) => l.startsWith('/')).map((l) => l.slice(1));
}

async function cat(image: string, path: string): Promise<string> {
  return (await execa('unsquashfs', ['-cat', image, path], { stripFinalNewline: false })).stdout;
}

async function partition(image: string, name: string): Promise<{ start: number; size: number }> {
  const table = JSON.parse((await execa('sfdisk', ['--json', image])).stdout) as { partitiontable: { partitions: { name: string; start: number; size: number }[] } };
  const p = table.partitiontable.partitions.find((q) => q.name === name);
  if (!p) throw new Error(`no partition ${name} in ${image}`);
  return { start: p.start * 512, size: p.size * 512 };
}

async function partitionFile(image: string, name: string, out: string): Promise<string> {
  const p = await partition(image, name);
  await execa('dd', [`if=${image}`, `of=${out}`, 'bs=1M', `skip=${p.start}`, `count=${p.size}`, 'iflag=skip_bytes,count_bytes', 'status=none']);
  return out;
}

async function withDataPartition<T>(image: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const p = await partition(image, LABELS.data);
  const dev = (await execa('losetup', ['--find', '--show', '--read-only', '--offset', String(p.start), '--sizelimit', String(p.size), image])).stdout.trim();
  const dir = scratch.path('data-mount');
  mkdirSync(dir, { recursive: true });
  try {
    expect((await execa('blkid', ['-o', 'value', '-s', 'LABEL', dev])).stdout).toBe(LABELS.data);
    await execa('mount', ['-o', 'ro', dev, dir]);
    try {
      return await fn(dir);
    } finally {
      await execa('umount', [dir]);
    }
  } finally {
    await execa('losetup', ['-d', dev]);
  }
}
