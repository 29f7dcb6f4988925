/**
 * The built stick the user's-day VM files boot (test/vm/stick.test.ts and
 * test/vm/stick-update.test.ts): the debian image made by `cairn image
 * build` with Debian's cloud kernel and the serial console, and a local
 * package repository on a second disk (test/helpers/apt-repo.ts, signed
 * with a key made for the test) so no mirror is needed: Debian's `hello`,
 * a newer linux-image than the image's own, and the archive's other GRUB
 * version (the image's boot files come from the build machine's GRUB).
 *
 * Both files run side by side (scripts/run-tests.mjs), so the image and the
 * repository are built once per test run, under a lock, and kept read-only;
 * each file boots its own sparse copy of the image in its own work directory.
 */
import { execa } from 'execa';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { grubVersionOf } from '../../src/grub/core.js';
import { TITLES } from '../../src/grub/menu.js';
import { OVMF } from '../../src/vm/qemu.js';
import { makeAptRepo, sourcesLine } from './apt-repo.js';
import { CLI, requireSystem } from './system.js';
import { archiveVersions, CACHE, cloudKernelDeb, debsToInstall } from './vm-kernel.js';
import { GRUB_BANNER, Vm } from './vm-qemu.js';
import { Session } from './vm-session.js';

export const SIZE_MIB = 2048;
export const PASSWORD = 'cairn-test';
export const MENU: string[] = [TITLES.default, TITLES.backup, TITLES.clean];
export const ENTRY = { default: 0, backup: 1, clean: 2 } as const;
export const UPPER = '/run/cairn/rw/upper';

const SHARED = join(CACHE, 'stick-shared');

export interface StickFixture {
  /** The image as built; never booted, copied by each file. */
  built: string;
  /** The package repository disk (ext4), attached as the VM's second disk. */
  repoDisk: string;
  /** The newer kernel of the repository. */
  update: { pkg: string; version: string };
  /** The GRUB packages of the repository, at a version other than the one that made the image's boot files. */
  grub: { version: string; packages: string[] };
}

/**
 * The shared image and repository: built by the first file of a test run
 * (scripts/run-tests.mjs sets CAIRN_TEST_RUN), reused by the others of the
 * same run; a file run on its own builds them afresh.
 */
export async function stickFixture(): Promise<StickFixture> {
  requireSystem(['mksquashfs', 'mkfs.ext4', 'losetup']);
  if (!existsSync('/usr/bin/qemu-system-x86_64')) throw new Error('the stick tests need QEMU: apt-get install qemu-system-x86');
  for (const tool of ['debootstrap', 'mkfs.vfat', 'mcopy', 'sfdisk', 'grub-mkimage']) {
    const r = await execa('sh', ['-c', `command -v ${tool}`], { reject: false });
    if (r.exitCode !== 0) throw new Error(`the stick tests need ${tool} (see .ci/run)`);
  }
  mkdirSync(SHARED, { recursive: true });
  const release = await lockfile.lock(SHARED, { retries: { retries: 1800, factor: 1, minTimeout: 1000, maxTimeout: 1000 }, stale: 60_000 });
  try {
    const record = join(SHARED, 'fixture.json');
    const run = process.env.CAIRN_TEST_RUN;
    if (run && existsSync(record)) {
      const kept = JSON.parse(readFileSync(record, 'utf8')) as StickFixture & { run: string };
      if (kept.run === run) return kept;
    }
    rmSync(record, { force: true });
    const fixture = await buildFixture();
    writeFileSync(record, JSON.stringify({ ...fixture, run }));
    return fixture;
  } finally {
    await release();
  }
}

async function buildFixture(): Promise<StickFixture> {
  const built = join(SHARED, 'built.img');
  const buildWork = join(SHARED, 'build-work');
  rmSync(built, { force: true });
  const r = await execa(
    process.execPath,
    [CLI, 'image', 'build', '--output', built, '--size', String(SIZE_MIB), '--kernel', 'linux-image-cloud-amd64',
      '--password', PASSWORD, '--console', 'serial', '--swap', '0', '--cache', join(CACHE, 'build'), '--work', buildWork],
    { reject: false },
  );
  if (r.exitCode !== 0) throw new Error(`cairn image build failed: ${r.stderr}`);

  const debs = join(SHARED, 'debs');
  rmSync(debs, { recursive: true, force: true });
  mkdirSync(debs);
  await execa('apt-get', ['download', 'hello'], { cwd: debs });
  const kernel = await cloudKernelDeb();
  const imageGrub = await grubVersionOf('i386-pc');
  const version = (await archiveVersions('grub-pc-bin')).find((v) => v !== imageGrub);
  if (!imageGrub || !version) throw new Error(`the archive offers no GRUB other than the build machine's ${imageGrub}: no GRUB update to test`);
  const packages = ['grub-common', 'grub-pc-bin', 'grub-efi-amd64-bin'].map((p) => `${p}=${version}`);
  // Dependencies as apt resolves them against the image's own root.
  const grubDebs = await debsToInstall(join(buildWork, 'root'), packages);
  const repo = join(SHARED, 'repo');
  rmSync(repo, { recursive: true, force: true });
  await makeAptRepo(repo, [kernel.deb, join(debs, readdirSync(debs).find((f) => f.startsWith('hello_'))!), ...grubDebs]);
  const repoDisk = join(SHARED, 'repo.img');
  rmSync(repoDisk, { force: true });
  await execa('mke2fs', ['-q', '-t', 'ext4', '-d', repo, repoDisk, '128M']);
  return { built, repoDisk, update: { pkg: kernel.pkg, version: kernel.version }, grub: { version, packages } };
}

/**
 * One VM file's stick: the shared fixture, a private sparse copy of the
 * built image in WORK, and the boots of that file (logs named PREFIX-...).
 */
export async function prepareStick(work: string, prefix: string): Promise<{ fixture: StickFixture; image: string; boots: StickBoots }> {
  const fixture = await stickFixture();
  mkdirSync(work, { recursive: true });
  const image = join(work, 'cairn.img');
  rmSync(image, { force: true });
  await execa('cp', ['--sparse=always', fixture.built, image]);
  return { fixture, image, boots: new StickBoots(work, fixture, prefix) };
}

/** The boots of one VM file: each from power-on to a root shell, stopped at the end of the file. */
export class StickBoots {
  private readonly vms: Vm[] = [];

  constructor(
    private readonly work: string,
    private readonly fixture: StickFixture,
    private readonly prefix: string,
  ) {}

  async boot(name: string, image: string, entry: keyof typeof ENTRY, firmware: 'bios' | 'uefi' = 'bios', menu = MENU): Promise<Session> {
    let uefiVars: string | undefined;
    if (firmware === 'uefi') {
      uefiVars = join(this.work, `${name}.vars.fd`);
      copyFileSync(OVMF.vars, uefiVars);
    }
    const vm = await Vm.start({
      name: `${this.prefix}-${name}`,
      stick: { image, firmware, uefiVars, persist: true, bus: 'virtio' },
      memoryMiB: 1024,
      disks: [this.fixture.repoDisk],
    });
    this.vms.push(vm);
    const s = new Session(vm);
    await s.pickEntry(menu, ENTRY[entry]);
    await s.login('root', PASSWORD);
    return s;
  }

  async stopAll(): Promise<void> {
    for (const vm of this.vms) await vm.stop();
  }
}

/** The version GRUB's banner named on this boot's console. */
export function bannerVersion(s: Session): string | undefined {
  return GRUB_BANNER.exec(s.vm.output)?.[1];
}

/** The test's package repository (the VM's second disk) as apt's only source. */
export async function useRepo(s: Session): Promise<void> {
  await s.ok(`mkdir -p /mnt/repo && mount -o ro /dev/vdb /mnt/repo && echo '${sourcesLine('/mnt/repo')}' > /etc/apt/sources.list`);
  await s.ok('apt-get update -q', 600_000);
}
