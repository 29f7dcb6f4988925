/**
 * The repacked special packages, checked byte for byte against the apk v2
 * format rules with tools other than cairn's reader where there are some
 * (zlib, GNU tar, openssl), and the shim, the mkinitfs trigger and the
 * local key. The packages come from a wrapper run against a STAND-IN FOR apk
 * (test/helpers/apk-standin.ts), which keeps what it "installed".
 */
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Esp } from '../../src/esp/esp.js';
import { ensureLocalKey, LocalKeyMismatchError } from '../../src/apk/localKey.js';
import { mkinitfsTrigger, type SystemHooks } from '../../src/apk/patch.js';
import { readApk } from '../../src/apk/read.js';
import { apkShimScript } from '../../src/apk/shim.js';
import { decodeTar } from '../../src/apk/tar.js';
import { verifyApk } from '../../src/apk/verify.js';
import { runApkWrapper } from '../../src/apk/wrapper.js';
import { firmwarePackage, harness, kernelPackage, type Harness } from '../helpers/apk-harness.js';

let h: Harness;
beforeEach(async () => {
  h = await harness();
});
afterEach(() => h.cleanup());

const hooks: SystemHooks = {
  kernelPayloads: async (tree) => [{ tree, release: '6.6.1-0-lts', image: join(tree, 'boot/vmlinuz-lts') }],
  installKernel: async (_t, p) => ({ release: p.release, modulesImage: 'm', modulesBytes: 1, kernelBytes: 1, initramfsBytes: 1, removed: [] }),
  installFirmware: async () => 1,
  updateGrubBootFiles: async () => [],
  forgetRemovedKernels: async () => ({ kept: [] }),
};

async function repacked(name: string): Promise<Buffer> {
  const saved = { ...process.env };
  Object.assign(process.env, h.env());
  try {
    const status = await runApkWrapper({
      argv: ['--root', h.root, 'add', name],
      realApk: h.apk,
      target: async () => ({ dataDir: h.data, esp: new Esp('/none'), initDir: '/none' }),
      hooks,
      say: () => undefined,
    });
    expect(status).toBe(0);
  } finally {
    process.env = saved;
  }
  return readFileSync(join(h.root, 'lib/apk/db/standin-packages', `${name}.apk`));
}

/** Gzip members by zlib alone: each member is inflated on its own and its compressed length found by trial. */
function members(file: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  while (start < file.length) {
    let end = start + 18;
    for (; end <= file.length; end++) {
      try {
        gunzipSync(file.subarray(start, end));
        if (end === file.length || (file[end] === 0x1f && file[end + 1] === 0x8b)) break;
      } catch {
        // not a whole member yet
      }
    }
    out.push(file.subarray(start, end));
    start = end;
  }
  return out;
}

async function checkFormat(bytes: Buffer, dir: string, expectedFiles: string[]) {
  const [sig, control, data, ...rest] = members(bytes);
  expect(rest).toEqual([]);
  // The signature member: a cut tar holding one .SIGN.RSA256.<local key> entry.
  const sigTar = gunzipSync(sig!);
  expect(sigTar.length % 512).toBe(0);
  expect(sigTar.subarray(0, 100).toString('latin1').replace(/\0.*$/s, '')).toBe('.SIGN.RSA256.cairn-local.rsa.pub');
  expect(sigTar.subarray(-512).some((b) => b !== 0)).toBe(true); // no end-of-archive blocks
  // The control member: a cut tar, .PKGINFO first, its datahash the sha256 of the data member.
  const controlTar = gunzipSync(control!);
  expect(controlTar.subarray(-1024).every((b) => b === 0)).toBe(false);
  const pkginfo = decodeTar(controlTar).entries[0]!;
  expect(pkginfo.name).toBe('.PKGINFO');
  const datahash = /^datahash = ([0-9a-f]{64})$/m.exec(pkginfo.content!.toString())![1];
  expect(datahash).toBe(createHash('sha256').update(data!).digest('hex'));
  // openssl checks the signature over the control member's compressed bytes with the local public key.
  writeFileSync(join(dir, 'control.tar.gz'), control!);
  const sigEntry = decodeTar(sigTar).entries[0]!;
  writeFileSync(join(dir, 'sig'), sigEntry.content!);
  await execa('openssl', ['dgst', '-sha256', '-verify', join(h.keysDir, 'cairn-local.rsa.pub'), '-signature', join(dir, 'sig'), join(dir, 'control.tar.gz')]);
  // The data member: a whole tar (end blocks kept) GNU tar reads; every file's APK-TOOLS.checksum.SHA1 is its sha1.
  const dataTar = gunzipSync(data!);
  expect(dataTar.subarray(-1024).every((b) => b === 0)).toBe(true);
  writeFileSync(join(dir, 'data.tar'), dataTar);
  const listed = (await execa('tar', ['-tf', join(dir, 'data.tar')])).stdout.split('\n').map((l) => l.replace(/\/$/, ''));
  expect(listed).toEqual(expectedFiles);
  mkdirSync(join(dir, 'x'));
  await execa('tar', ['-xf', join(dir, 'data.tar'), '-C', join(dir, 'x')]);
  for (const e of decodeTar(dataTar).entries) {
    if (e.type !== 'file') continue;
    const sha1 = e.pax!.find((r) => r.key === 'APK-TOOLS.checksum.SHA1')!.value.toString();
    expect(sha1, e.name).toBe(createHash('sha1').update(readFileSync(join(dir, 'x', e.name))).digest('hex'));
  }
  // And cairn's own reader agrees, as apk would: signed by the local key, datahash good.
  const v = await verifyApk(bytes, { trustedKeysDir: h.keysDir });
  expect(v.keyName).toBe('cairn-local.rsa.pub');
  expect(v.covers).toBe('control');
}

describe('repacked special packages, byte for byte (stand-in for apk)', () => {
  it('the kernel package: no modules, no boot files, no scripts, signed by the local key', async () => {
    kernelPackage(h);
    h.scenario({ changes: { add: [{ message: 'Installing', name: 'linux-lts', version: '6.6.1-r0' }] } });
    const bytes = await repacked('linux-lts');
    await checkFormat(bytes, h.dir, ['lib', 'lib/modules', 'usr', 'usr/share', 'usr/share/kernel', 'usr/share/kernel/lts', 'usr/share/kernel/lts/kernel.release']);
    const pkg = readApk(bytes);
    expect(pkg.controlEntries.map((e) => e.name)).toEqual(['.PKGINFO']);
    expect(pkg.pkginfoText).toMatch(/^# cairn: kernel package repacked by cairn's apk wrapper from Q1\S+ signed by alpine-devel@alpinelinux\.org-6165ee59\.rsa\.pub$/m);
    expect(pkg.pkginfoText).not.toMatch(/^triggers = /m);
    expect(pkg.pkginfoText).toMatch(/^depend = mkinitfs$/m);
  });

  it('the firmware package: nothing under lib/firmware', async () => {
    firmwarePackage(h);
    h.scenario({ changes: { add: [{ message: 'Installing', name: 'linux-firmware-intel', version: '20231111-r1' }] } });
    const bytes = await repacked('linux-firmware-intel');
    await checkFormat(bytes, h.dir, ['lib', 'usr', 'usr/share', 'usr/share/licenses', 'usr/share/licenses/LICENCE.intel']);
  });

  it('is the same package when repacked again (so a reinstall finds it by identity)', async () => {
    kernelPackage(h);
    h.scenario({ changes: { add: [{ message: 'Installing', name: 'linux-lts', version: '6.6.1-r0' }] } });
    const first = await repacked('linux-lts');
    const second = await repacked('linux-lts');
    expect(second.equals(first)).toBe(true);
  });
});

describe('the apk shim', () => {
  function fakeBin(dir: string, name: string, body: string) {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, name), `#!/bin/sh\n${body}\n`);
    chmodSync(join(dir, name), 0o755);
  }

  it('passes every argument to cairn apk after a --, and is clean for shellcheck', async () => {
    const bin = join(h.dir, 'bin');
    fakeBin(bin, 'cairn', 'printf "%s|" "$CAIRN_REAL_APK" "$@"');
    fakeBin(bin, 'node', 'true');
    writeFileSync(join(h.dir, 'apk'), apkShimScript('/sbin/apk'));
    const r = await execa('sh', [join(h.dir, 'apk'), 'add', '-X', 'a b', '--', '-V'], { env: { PATH: `${bin}:/usr/bin:/bin` } });
    expect(r.stdout).toBe('/sbin/apk|apk|--|add|-X|a b|--|-V|');
    await execa('shellcheck', ['-s', 'sh', join(h.dir, 'apk')]);
  });

  it('falls back to the real apk with a warning when cairn\'s runtime is missing', async () => {
    const bin = join(h.dir, 'bin2');
    fakeBin(bin, 'realapk', 'echo "real apk: $*"; exit 4');
    writeFileSync(join(h.dir, 'apk'), apkShimScript(join(bin, 'realapk')));
    const r = await execa('/bin/sh', [join(h.dir, 'apk'), 'info', 'x'], { env: { PATH: '/nonexistent' }, reject: false });
    expect(r.exitCode).toBe(4);
    expect(r.stdout).toBe('real apk: info x');
    expect(r.stderr).toMatch(/cairn's runtime is missing/);
  });
});

describe("mkinitfs's trigger as cairn repacks it", () => {
  it('leaves kernels the wrapper installed (now or earlier) alone and builds others with cairn initramfs build', async () => {
    const bin = join(h.dir, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'cairn'), `#!/bin/sh\necho "cairn $*" >> ${h.dir}/cairn-calls\n`);
    chmodSync(join(bin, 'cairn'), 0o755);
    const trigger = join(h.dir, 'trigger');
    writeFileSync(trigger, mkinitfsTrigger(join(bin, 'cairn')));
    await execa('shellcheck', ['-s', 'sh', trigger]);
    for (const [flavor, rel] of [['lts', '6.6.1-0-lts'], ['virt', '6.6.1-0-virt'], ['edge', '6.7.0-0-edge']] as const) {
      mkdirSync(join(h.dir, 'kernel', flavor), { recursive: true });
      writeFileSync(join(h.dir, 'kernel', flavor, 'kernel.release'), `${rel}\n`);
    }
    // lts: installed by this wrapper run (in the marker, its image on the ESP);
    // virt: upstream's package installed around the wrapper (its image in /boot);
    // edge: a repack installed by an earlier run (no image in /boot), the trigger
    // fired because mkinitfs itself changed (apk then fires it for every kernel).
    const boot = join(h.dir, 'boot');
    mkdirSync(boot);
    writeFileSync(join(boot, 'vmlinuz-virt'), 'upstream kernel');
    // The marker lives at /run/cairn/apk-kernels; run the trigger with it and /boot pointing into the test dir.
    const marker = join(h.dir, 'apk-kernels');
    writeFileSync(marker, '6.6.1-0-lts\n');
    writeFileSync(trigger, readFileSync(trigger, 'utf8').replace('marker=/run/cairn/apk-kernels', `marker=${marker}`).replace('boot=/boot\n', `boot=${boot}\n`));
    const r = await execa('sh', [trigger, join(h.dir, 'kernel/lts'), join(h.dir, 'kernel/virt'), join(h.dir, 'kernel/edge')]);
    expect(r.stdout).toMatch(/kernel 6\.6\.1-0-lts: modules image, kernel and initramfs are on the stick already/);
    expect(r.stdout).toMatch(/kernel 6\.7\.0-0-edge: installed through cairn's apk wrapper, its initramfs is on the stick/);
    expect(r.stderr).toMatch(/6\.6\.1-0-virt \(virt\) was installed around cairn's apk wrapper/);
    expect(r.stderr).not.toMatch(/edge/);
    expect(readFileSync(join(h.dir, 'cairn-calls'), 'utf8')).toBe(`cairn initramfs build --kver 6.6.1-0-virt --modules-dir / --output ${boot}/initramfs-virt\n`);
  });
});

describe('the local signing key', () => {
  it('is made when missing: private on the data partition (0600, in a 0700 directory), public in the keys directory', async () => {
    const data = join(h.dir, 'newdata');
    const keys = join(h.dir, 'newkeys');
    mkdirSync(data);
    const k = await ensureLocalKey(data, keys, { bits: 1024 });
    expect(k.created).toEqual({ privateKey: true, publicKey: true });
    expect(statSync(k.privatePath).mode & 0o777).toBe(0o600);
    expect(statSync(join(data, '.cairn/apk')).mode & 0o777).toBe(0o700);
    expect(existsSync(join(keys, 'cairn-local.rsa.pub'))).toBe(true);
    const again = await ensureLocalKey(data, keys);
    expect(again.created).toEqual({ privateKey: false, publicKey: false });
    // A lost public key is written again from the private one; a wrong one is refused.
    rmSync(join(keys, 'cairn-local.rsa.pub'));
    expect((await ensureLocalKey(data, keys)).created).toEqual({ privateKey: false, publicKey: true });
    writeFileSync(join(keys, 'cairn-local.rsa.pub'), '');
    await expect(ensureLocalKey(data, keys)).rejects.toBeInstanceOf(LocalKeyMismatchError);
  });
});
