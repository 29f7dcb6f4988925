/**
 * cairn apk against a STAND-IN FOR apk (test/helpers/apk-standin.ts): real
 * apk-tools does not exist on these machines and Alpine's mirrors are out
 * of reach. The stand-in prints apk 2.14's --simulate format (apk 3's where a
 * test says so), serves fetch from packages built here with src/apk/write.ts,
 * checks signatures like apk and records what it "installs". installKernel
 * and installFirmware are replaced by recorders here;
 * test/system/apk-kernel.test.ts runs them for real.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Esp } from '../../src/esp/esp.js';
import { kernelPayloads } from '../../src/packages/kernel.js';
import type { SystemTarget } from '../../src/packages/target.js';
import type { SystemHooks } from '../../src/apk/patch.js';
import { packageIdentity, readApk } from '../../src/apk/read.js';
import { runApkWrapper } from '../../src/apk/wrapper.js';
import { firmwarePackage, grubPackage, harness, kernelPackage, KREL, mkinitfsPackage, ordinaryPackage, upstreamPackage, file, dir, UPSTREAM_KEY_NAME, type Harness } from '../helpers/apk-harness.js';
import { generateKeyPairSync } from 'node:crypto';
import { writeApk } from '../../src/apk/write.js';

let h: Harness;
let hooked: { kernels: { release: string; files: string[] }[]; firmware: string[][]; grubLibs: string[]; removals: Record<string, boolean>[] };

beforeEach(async () => {
  h = await harness();
  hooked = { kernels: [], firmware: [], grubLibs: [], removals: [] };
});
afterEach(() => h.cleanup());

function listTree(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(root, rel)).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    out.push(r);
    try {
      out.push(...listTree(root, r));
    } catch {
      // not a directory
    }
  }
  return out;
}

const hooks: SystemHooks = {
  kernelPayloads,
  installKernel: async (_t, p) => {
    hooked.kernels.push({ release: p.release, files: listTree(p.tree) });
    return { release: p.release, modulesImage: `modules-${p.release}.squashfs`, modulesBytes: 1, kernelBytes: 1, initramfsBytes: 1, removed: [] };
  },
  installFirmware: async (_t, tree) => {
    hooked.firmware.push(listTree(tree));
    return 1;
  },
  updateGrubBootFiles: async (_t, o) => {
    hooked.grubLibs.push(o?.libDir ?? '');
    return [];
  },
  // Records what the wrapper says is still installed, for the two releases the removal test uses.
  forgetRemovedKernels: async (_t, installed) => {
    hooked.removals.push({ '6.6.1-0-virt': await installed('6.6.1-0-virt'), '6.6.2-0-lts': await installed('6.6.2-0-lts') });
    return { kept: [] };
  },
};

function target(): () => Promise<SystemTarget> {
  return async () => ({ dataDir: h.data, esp: new Esp(join(h.dir, 'no-esp.img')), initDir: '/nonexistent' });
}

/** Runs the wrapper on the harness; what it says goes to `said`, when given. */
async function wrap(argv: string[], said?: string[]): Promise<number> {
  const saved = { ...process.env };
  Object.assign(process.env, h.env());
  try {
    const say = (l: string) => void said?.push(l);
    return await runApkWrapper({ argv: ['--root', h.root, ...argv], realApk: h.apk, target: target(), hooks, lockWaitSeconds: 5, say });
  } finally {
    process.env = saved;
  }
}

const installed = () => readFileSync(join(h.root, 'lib/apk/db/installed'), 'utf8');
const world = () => readFileSync(join(h.root, 'etc/apk/world'), 'utf8');
const apkCalls = () => h.calls().map((c) => c.filter((a) => a !== '--root' && a !== h.root && a !== `--root=${h.root}`));

describe('cairn apk pass-through (stand-in for apk)', () => {
  it('runs any other applet unchanged, with its output and exit status', async () => {
    const r = await h.cairn(['apk', '--', 'info', '-vv', '--root', '/x', 'a b'], {
      env: { STANDIN_STDOUT: 'out line\n', STANDIN_STDERR: 'err line\n', STANDIN_EXIT: '3' },
    });
    expect(r.exitCode).toBe(3);
    expect(r.stdout).toBe('out line');
    expect(r.stderr).toBe('err line');
    expect(h.calls()).toEqual([['info', '-vv', '--root', '/x', 'a b']]);
  });

  it('without --, takes every argument as apk\'s', async () => {
    const r = await h.cairn(['apk', 'search', '-x', 'linux-*']);
    expect(r.exitCode).toBe(0);
    expect(h.calls()).toEqual([['search', '-x', 'linux-*']]);
  });

  it('gives apk the terminal\'s stdin', async () => {
    const r = await h.cairn(['apk', '--', 'version'], { env: { STANDIN_READ_STDIN: '1' }, input: 'yes please\n' });
    expect(r.stdout).toBe('read from stdin: yes please');
  });

  it('reports a signal that killed apk as 128 + its number', async () => {
    const r = await h.cairn(['apk', '--', 'info'], { env: { STANDIN_SIGNAL: 'SIGTERM' } });
    expect(r.exitCode).toBe(128 + 15);
  });

  it('runs add of ordinary packages unchanged after simulating it', async () => {
    ordinaryPackage(h);
    h.scenario({ changes: { add: [{ message: 'Installing', name: 'htop', version: '3.2.2-r1' }] } });
    const r = await h.cairn(['apk', '--', '--root', h.root, 'add', '-q', 'htop']);
    expect(r.exitCode).toBe(0);
    expect(apkCalls()).toEqual([
      ['update', '--quiet', '--wait=120'],
      ['add', '-q', 'htop', '--simulate', '--verbose'],
      ['add', '-q', 'htop'],
    ]);
    expect(world()).toBe('alpine-base\nhtop\n');
  });

  it('passes --simulate, --help and unknown last options straight through', async () => {
    await h.cairn(['apk', '--', 'add', '--simulate', 'linux-lts']);
    await h.cairn(['apk', '--', 'add', '--help']);
    expect(h.calls()).toEqual([['add', '--simulate', 'linux-lts'], ['add', '--help']]);
  });

  it('refuses --allow-untrusted when the transaction has a special package, before fetching anything', async () => {
    kernelPackage(h);
    h.scenario({ changes: { add: [{ message: 'Installing', name: 'linux-lts', version: '6.6.1-r0' }] } });
    const r = await h.cairn(['apk', '--', '--root', h.root, 'add', '--allow-untrusted', 'linux-lts']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/--allow-untrusted with special packages \(linux-lts\)/);
    expect(apkCalls().map((c) => c[0])).toEqual(['update', 'add']);
    expect(existsSync(join(h.root, 'lib/apk/db/installed'))).toBe(false);
  });

  it('runs an ordinary add when a package broken earlier makes every apk commit end in "1 error" (status 1)', async () => {
    // Real apk 2.14.4: one installed package with a failed script (f:s) makes each
    // commit, simulations included, print "1 error; ..." and exit 1, and still install.
    ordinaryPackage(h);
    h.scenario({ brokenPackages: 1, changes: { add: [{ message: 'Installing', name: 'htop', version: '3.2.2-r1' }] } });
    const r = await h.cairn(['apk', '--', '--root', h.root, 'add', 'htop']);
    expect(r.exitCode).toBe(1);
    expect(apkCalls()).toEqual([['update', '--quiet', '--wait=120'], ['add', 'htop', '--simulate'], ['add', 'htop']]);
    expect(r.stdout).toMatch(/^1 error; /m);
    expect(installed()).toMatch(/P:htop/);
  });

  it('fails clearly when another apk holds the database lock', async () => {
    h.scenario({ lockHeld: true });
    const r = await h.cairn(['apk', '--lock-wait', '1', '--', '--root', h.root, 'add', 'htop']);
    expect(r.exitCode).toBe(75);
    expect(r.stderr).toMatch(/another apk holds the package database lock/);
  });
});

describe('cairn apk with special packages (stand-in for apk)', () => {
  it('installs a kernel repacked from a local repository, in the user\'s own transaction, world unpinned', async () => {
    kernelPackage(h);
    mkinitfsPackage(h);
    firmwarePackage(h);
    ordinaryPackage(h);
    h.scenario({
      changes: {
        add: [
          { message: 'Installing', name: 'mkinitfs', version: '3.9.0-r1' },
          { message: 'Installing', name: 'linux-firmware-intel', version: '20231111-r1' },
          { message: 'Installing', name: 'htop', version: '3.2.2-r1' },
          { message: 'Installing', name: 'linux-lts', version: '6.6.1-r0' },
        ],
      },
    });
    expect(await wrap(['add', 'linux-lts', 'htop'])).toBe(0);

    // The patches got the upstream files.
    expect(hooked.kernels.map((k) => k.release)).toEqual([KREL]);
    expect(hooked.kernels[0]!.files).toContain(`lib/modules/${KREL}/kernel/fs/squashfs/squashfs.ko.gz`);
    expect(hooked.kernels[0]!.files).toContain('boot/vmlinuz-lts');
    expect(hooked.firmware[0]).toContain('lib/firmware/intel/ibt-20-1-3.sfi');

    // One transaction: the user's command, plus the local repository, never a name=version.
    const calls = apkCalls();
    const final = calls.at(-1)!;
    expect(final.slice(0, 4)).toEqual(['--wait=5', 'add', 'linux-lts', 'htop']);
    expect(final.slice(4).every((a) => a.startsWith('--repository='))).toBe(true);
    expect(calls.filter((c) => c.includes('add') && !c.includes('--simulate'))).toHaveLength(1);
    expect(world()).toBe('alpine-base\nhtop\nlinux-lts\n');

    // What apk installed: the repacks, signed by the local key, without the moved files and scripts.
    const pkgs = join(h.root, 'lib/apk/db/standin-packages');
    const kernel = readApk(readFileSync(join(pkgs, 'linux-lts.apk')));
    expect(kernel.signatures.map((s) => s.keyName)).toEqual(['cairn-local.rsa.pub']);
    expect(kernel.dataEntries.map((e) => e.name)).toEqual(['lib', 'lib/modules', 'usr', 'usr/share', 'usr/share/kernel', 'usr/share/kernel/lts', 'usr/share/kernel/lts/kernel.release']);
    expect(kernel.controlEntries.map((e) => e.name)).toEqual(['.PKGINFO']);
    expect(kernel.pkginfo.triggers).toEqual([]);
    expect(kernel.pkginfo.size).toBe(`${KREL}\n`.length);
    const firmware = readApk(readFileSync(join(pkgs, 'linux-firmware-intel.apk')));
    expect(firmware.dataEntries.map((e) => e.name)).toEqual(['lib', 'usr', 'usr/share', 'usr/share/licenses', 'usr/share/licenses/LICENCE.intel']);
    const mkinitfs = readApk(readFileSync(join(pkgs, 'mkinitfs.apk')));
    expect(mkinitfs.controlEntries.find((e) => e.name === '.trigger')!.content!.toString()).toMatch(/cairn initramfs build|initramfs build --kver/);
    const htop = readApk(readFileSync(join(pkgs, 'htop.apk')));
    expect(htop.signatures.map((s) => s.keyName)).toEqual(['alpine-devel@alpinelinux.org-6165ee59.rsa.pub']);
    expect(readFileSync(join(h.root, 'lib/apk/db/standin-scripts'), 'utf8')).not.toMatch(/linux-lts/);
    // The marker for mkinitfs's trigger is gone again.
    expect(existsSync(join(h.root, 'run/cairn/apk-kernels'))).toBe(false);
  });

  it('installs the repacked kernel when a package broken earlier makes apk count an error in every commit', async () => {
    kernelPackage(h);
    h.scenario({ brokenPackages: 1, changes: { add: [{ message: 'Installing', name: 'linux-lts', version: '6.6.1-r0' }] } });
    expect(await wrap(['add', 'linux-lts'])).toBe(1);
    expect(hooked.kernels.map((k) => k.release)).toEqual([KREL]);
    const final = apkCalls().at(-1)!;
    expect(final.slice(0, 3)).toEqual(['--wait=5', 'add', 'linux-lts']);
    expect(final.slice(3).every((a) => a.startsWith('--repository='))).toBe(true);
    const kernel = readApk(readFileSync(join(h.root, 'lib/apk/db/standin-packages/linux-lts.apk')));
    expect(kernel.signatures.map((s) => s.keyName)).toEqual(['cairn-local.rsa.pub']);
  });

  it("apk-tools 3: repacks firmware and a kernel among the first nine of twelve changes (steps printed '( 1/12)')", async () => {
    kernelPackage(h);
    mkinitfsPackage(h);
    firmwarePackage(h);
    const tools = Array.from({ length: 9 }, (_, i) => `tool${i}`);
    for (const t of tools) ordinaryPackage(h, t, '1.0-r0');
    h.scenario({
      apkVersion: 3,
      changes: {
        add: [
          { message: 'Installing', name: 'linux-firmware-intel', version: '20231111-r1' },
          { message: 'Installing', name: 'mkinitfs', version: '3.9.0-r1' },
          { message: 'Installing', name: 'linux-lts', version: '6.6.1-r0' },
          ...tools.map((name) => ({ message: 'Installing' as const, name, version: '1.0-r0' })),
        ],
      },
    });
    expect(await wrap(['add', 'linux-lts', 'linux-firmware-intel', ...tools])).toBe(0);
    expect(hooked.kernels.map((k) => k.release)).toEqual([KREL]);
    expect(hooked.firmware).toHaveLength(1);
    const pkgs = join(h.root, 'lib/apk/db/standin-packages');
    for (const name of ['linux-lts', 'linux-firmware-intel', 'mkinitfs']) {
      expect(readApk(readFileSync(join(pkgs, `${name}.apk`))).signatures.map((s) => s.keyName)).toEqual(['cairn-local.rsa.pub']);
    }
  });

  it('fix --reinstall of a kernel it installed finds the same repack (same identity) and puts it on the stick again', async () => {
    kernelPackage(h);
    h.scenario({ changes: { add: [{ message: 'Installing', name: 'linux-lts', version: '6.6.1-r0' }] } });
    expect(await wrap(['add', 'linux-lts'])).toBe(0);
    const before = installed();
    h.scenario({ changes: { fix: [{ message: 'Reinstalling', name: 'linux-lts', version: '6.6.1-r0'}] } });
    expect(await wrap(['fix', '--reinstall', 'linux-lts'])).toBe(0);
    expect(hooked.kernels.map((k) => k.release)).toEqual([KREL, KREL]);
    expect(apkCalls().at(-1)!.slice(0, 4)).toEqual(['--wait=5', 'fix', '--reinstall', 'linux-lts']);
    expect(installed()).toBe(before);
  });

  it('fix --reinstall of a repack by an earlier cairn, which apk cannot reinstall: says so, leaves the stick alone, no false alarm', async () => {
    kernelPackage(h);
    // Installed: linux-lts 6.6.1-r0 as a repack no repository holds (another identity than the one made now).
    writeFileSync(join(h.root, 'lib/apk/db/installed'), 'C:Q1AnEarlierRepackOfLinuxLts00000=\nP:linux-lts\nV:6.6.1-r0\nF:usr\n\n');
    h.scenario({ changes: { fix: [{ message: 'Reinstalling', name: 'linux-lts', version: '6.6.1-r0'}] } });
    const said: string[] = [];
    expect(await wrap(['fix', '--reinstall', 'linux-lts'], said)).toBe(0);
    expect(said.join('\n')).toMatch(/linux-lts 6\.6\.1-r0: apk skips its reinstall: the installed package is a repack by an earlier cairn/);
    expect(hooked.kernels).toEqual([]);
    expect(installed()).toMatch(/^C:Q1AnEarlierRepackOfLinuxLts00000=$/m);
  });

  it("fix --reinstall of upstream's kernel (installed around the wrapper) puts it on the stick; apk keeps upstream's package: a warning, apk's status", async () => {
    const upstreamBytes = kernelPackage(h);
    // Installed around the wrapper: upstream's own package.
    writeFileSync(join(h.root, 'lib/apk/db/installed'), `C:${packageIdentity(readApk(upstreamBytes).control.compressed)}\nP:linux-lts\nV:6.6.1-r0\nF:boot\n\n`);
    h.scenario({ changes: { fix: [{ message: 'Reinstalling', name: 'linux-lts', version: '6.6.1-r0' }] } });
    const said: string[] = [];
    expect(await wrap(['fix', '--reinstall', 'linux-lts'], said)).toBe(0);
    expect(hooked.kernels.map((k) => k.release)).toEqual([KREL]);
    expect(said.join('\n')).toMatch(/apk reinstalled linux-lts 6\.6\.1-r0 as installed, upstream's package .*apk del linux-lts and apk add linux-lts through cairn/);
    expect(readApk(readFileSync(join(h.root, 'lib/apk/db/standin-packages/linux-lts.apk'))).signatures.map((s) => s.keyName)).toEqual([
      'alpine-devel@alpinelinux.org-6165ee59.rsa.pub',
    ]);
  });

  it('upgrades keep world as it was', async () => {
    kernelPackage(h, '6.6.2-r0', '6.6.2-0-lts');
    writeFileSync(join(h.root, 'etc/apk/world'), 'alpine-base\nlinux-lts\n');
    h.scenario({ changes: { upgrade: [{ message: 'Upgrading', name: 'linux-lts', version: '6.6.2-r0', old: '6.6.1-r0' }] } });
    expect(await wrap(['upgrade', '-a'])).toBe(0);
    expect(hooked.kernels.map((k) => k.release)).toEqual(['6.6.2-0-lts']);
    expect(world()).toBe('alpine-base\nlinux-lts\n');
    expect(installed()).toMatch(/P:linux-lts\nV:6\.6\.2-r0/);
  });

  it('drops GRUB\'s config-writing trigger and scripts, keeping its files', async () => {
    grubPackage(h);
    h.scenario({ changes: { add: [{ message: 'Installing', name: 'grub', version: '2.12-r1' }] } });
    expect(hooked.grubLibs).toEqual([]);
    expect(await wrap(['add', 'grub'])).toBe(0);
    // After apk, the stick's boot files are remade from the GRUB it installed.
    expect(hooked.grubLibs).toEqual([join(h.root, 'usr/lib/grub')]);
    const grub = readApk(readFileSync(join(h.root, 'lib/apk/db/standin-packages/grub.apk')));
    expect(grub.controlEntries.map((e) => e.name)).toEqual(['.PKGINFO', '.pre-install']);
    expect(grub.pkginfo.triggers).toEqual([]);
    expect(grub.dataEntries.map((e) => e.name)).toContain('usr/sbin/update-grub');
  });

  it('after apk del of a kernel, lets the stick forget kernels no installed package ships (and not after an ordinary del)', async () => {
    // The kernel left installed ships its kernel.release, as Alpine's kernel packages do.
    mkdirSync(join(h.root, 'usr/share/kernel/lts'), { recursive: true });
    writeFileSync(join(h.root, 'usr/share/kernel/lts/kernel.release'), '6.6.2-0-lts\n');
    h.scenario({ changes: { del: [{ message: 'Purging', name: 'htop', version: '3.3.0-r0' }] } });
    expect(await wrap(['del', 'htop'])).toBe(0);
    expect(hooked.removals).toEqual([]);
    h.scenario({ changes: { del: [{ message: 'Purging', name: 'linux-virt', version: '6.6.1-r0' }] } });
    expect(await wrap(['del', 'linux-virt'])).toBe(0);
    expect(hooked.removals).toEqual([{ '6.6.1-0-virt': false, '6.6.2-0-lts': true }]);
  });

  /** Moves the upstream key from <root>/etc/apk/keys to `to` (relative to the root). */
  function moveUpstreamKey(to: string): void {
    mkdirSync(join(h.root, to), { recursive: true });
    renameSync(join(h.keysDir, UPSTREAM_KEY_NAME), join(h.root, to, UPSTREAM_KEY_NAME));
  }

  it('apk-tools 3: trusts an upstream key in <root>/lib/apk/keys, as apk 3 does', async () => {
    kernelPackage(h);
    moveUpstreamKey('lib/apk/keys');
    h.scenario({ apkVersion: 3, changes: { add: [{ message: 'Installing', name: 'linux-lts', version: '6.6.1-r0' }] } });
    expect(await wrap(['add', 'linux-lts'])).toBe(0);
    expect(hooked.kernels.map((k) => k.release)).toEqual([KREL]);
    // The local key's public half still goes to /etc/apk/keys.
    expect(existsSync(join(h.keysDir, 'cairn-local.rsa.pub'))).toBe(true);
  });

  it('apk-tools 2.14: a key in <root>/lib/apk/keys is not trusted, as apk 2.14 reads only /etc/apk/keys', async () => {
    kernelPackage(h);
    moveUpstreamKey('lib/apk/keys');
    h.scenario({ changes: { add: [{ message: 'Installing', name: 'linux-lts', version: '6.6.1-r0' }] } });
    await expect(wrap(['add', 'linux-lts'])).rejects.toThrow(/linux-lts 6\.6\.1-r0: checking its signature failed/);
    expect(hooked.kernels).toEqual([]);
  });

  it('takes a relative --keys-dir under --root, as apk opens it', async () => {
    kernelPackage(h);
    moveUpstreamKey('srv/keys');
    renameSync(join(h.keysDir, 'cairn-local.rsa.pub'), join(h.root, 'srv/keys/cairn-local.rsa.pub'));
    h.scenario({ changes: { add: [{ message: 'Installing', name: 'linux-lts', version: '6.6.1-r0' }] } });
    expect(await wrap(['--keys-dir', 'srv/keys', 'add', 'linux-lts'])).toBe(0);
    expect(hooked.kernels.map((k) => k.release)).toEqual([KREL]);
  });

  for (const [what, spoil] of [
    ['unsigned', (h: Harness) => writeUnsignedKernel(h)],
    ['signed by an unknown key', (h: Harness) => writeForeignKernel(h)],
    ['changed after signing (forged data)', (h: Harness) => writeForgedKernel(h)],
    ['not an apk at all (corrupt)', (h: Harness) => writeFileSync(join(h.upstream, 'linux-lts-6.6.1-r0.apk'), Buffer.from('not gzip at all'))],
  ] as const) {
    it(`refuses a kernel package ${what}: nothing installed, apk never run for the command`, async () => {
      spoil(h);
      h.scenario({ changes: { add: [{ message: 'Installing', name: 'linux-lts', version: '6.6.1-r0' }] } });
      await expect(wrap(['add', 'linux-lts'])).rejects.toThrow(/linux-lts 6\.6\.1-r0: checking its signature failed/);
      expect(hooked.kernels).toEqual([]);
      expect(apkCalls().filter((c) => c.includes('add') && !c.includes('--simulate'))).toEqual([]);
      expect(existsSync(join(h.root, 'lib/apk/db/installed'))).toBe(false);
    });
  }

  it('stops before apk when the kernel patch fails', async () => {
    kernelPackage(h);
    h.scenario({ changes: { add: [{ message: 'Installing', name: 'linux-lts', version: '6.6.1-r0' }] } });
    const failing: SystemHooks = { ...hooks, installKernel: async () => { throw new Error('ESP full'); } };
    Object.assign(process.env, h.env());
    await expect(
      runApkWrapper({ argv: ['--root', h.root, 'add', 'linux-lts'], realApk: h.apk, target: target(), hooks: failing, lockWaitSeconds: 5, say: () => undefined }),
    ).rejects.toThrow(/linux-lts 6\.6\.1-r0: installing its kernel files on the stick failed: ESP full/);
    expect(apkCalls().filter((c) => c.includes('add') && !c.includes('--simulate'))).toEqual([]);
  });

  it('refuses when the local repository would not be trusted by apk', async () => {
    kernelPackage(h);
    h.scenario({ changes: { add: [{ message: 'Installing', name: 'linux-lts', version: '6.6.1-r0' }] } });
    // The public key apk trusts is not the local private key's half.
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' });
    writeFileSync(join(h.keysDir, 'cairn-local.rsa.pub'), other);
    await expect(wrap(['add', 'linux-lts'])).rejects.toThrow(/is not the public half/);
    expect(hooked.kernels).toEqual([]);
  });
});

function writeUnsignedKernel(h: Harness): void {
  const bytes = kernelPackage(h);
  const pkg = readApk(bytes);
  writeFileSync(join(h.upstream, 'linux-lts-6.6.1-r0.apk'), bytes.subarray(pkg.control.start));
}

function writeForeignKernel(h: Harness): void {
  const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const written = writeApk({
    pkginfo: 'pkgname = linux-lts\npkgver = 6.6.1-r0\narch = x86_64\nsize = 1\n',
    data: [dir('boot'), file('boot/vmlinuz-lts', 'x')],
    signingKey: stranger,
    keyName: 'alpine-devel@alpinelinux.org-6165ee59.rsa.pub',
  });
  writeFileSync(join(h.upstream, 'linux-lts-6.6.1-r0.apk'), written.bytes);
}

function writeForgedKernel(h: Harness): void {
  const bytes = Buffer.from(kernelPackage(h));
  const pkg = readApk(bytes);
  // Swap the data member for another one: the signed datahash no longer matches.
  const other = upstreamPackage(h, { name: 'linux-lts', version: '6.6.1-r0', data: [dir('boot'), file('boot/vmlinuz-lts', 'evil')] });
  const otherPkg = readApk(other);
  writeFileSync(join(h.upstream, 'linux-lts-6.6.1-r0.apk'), Buffer.concat([bytes.subarray(0, pkg.data.start), other.subarray(otherPkg.data.start)]));
}
