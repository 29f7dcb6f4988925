/**
 * Bad input to `cairn image build` and build-image.sh stops them before
 * anything is installed, built or written: the password of the user and
 * root (never silently none; a made-up password printed by an unattended
 * build-image.sh, and logging in with it, is test/vm/usb-stick.test.ts),
 * the VM options, and a target that is this machine's own disk.
 */
import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, requireSystem, Scratch } from '../helpers/system.js';

let scratch: Scratch;

beforeAll(() => {
  requireSystem([]);
  scratch = new Scratch();
});
afterAll(async () => {
  await scratch?.cleanup();
});

describe('cairn image build: the password, bad input (nothing is built)', () => {
  const build = (args: string[], input = '') =>
    execa(process.execPath, [CLI, 'image', 'build', '--output', scratch.path('never.img'), '--cache', scratch.path('cache'), ...args], {
      reject: false,
      input,
    });
  const nothingBuilt = () => {
    expect(existsSync(scratch.path('never.img'))).toBe(false);
    expect(existsSync(scratch.path('never.img.password'))).toBe(false);
    expect(existsSync(scratch.path('cache'))).toBe(false);
  };

  it('refuses two ways of giving it at once', async () => {
    for (const args of [
      ['--password', 'a', '--password-file', '-'],
      ['--password', 'a', '--lock-accounts'],
      ['--password-file', '-', '--lock-accounts'],
    ]) {
      const r = await build(args, 'secret\n');
      expect(r.exitCode, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/contradict each other: give one/);
      nothingBuilt();
    }
  });

  it('refuses an empty password, and says how to lock the accounts instead', async () => {
    const r = await build(['--password', '']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/--password is empty[\s\S]*--lock-accounts/);
    const empty = scratch.path('empty');
    await writeFile(empty, '\n');
    const fromFile = await build(['--password-file', empty]);
    expect(fromFile.exitCode).toBe(2);
    expect(fromFile.stderr).toMatch(/the password from .*empty is empty/);
    nothingBuilt();
  });

  it('refuses a password with a line end in it', async () => {
    const r = await build(['--password', 'one\ntwo']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/the password holds a line end: a password is one line/);
    nothingBuilt();
  });

  it('refuses a password file of two lines, or one it cannot read', async () => {
    const two = await build(['--password-file', '-'], 'one\ntwo\n');
    expect(two.exitCode).toBe(2);
    expect(two.stderr).toMatch(/the password file \(standard input\) holds more than one line/);
    const missing = await build(['--password-file', scratch.path('no-such-file')]);
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toMatch(/cannot read the password from .*no-such-file/);
    nothingBuilt();
  });

  it('refuses the password and the passphrase both from standard input', async () => {
    const r = await build(['--password-file', '-', '--encrypt', '--passphrase-file', '-'], 'one\n');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/the password and the passphrase cannot both come from standard input/);
    nothingBuilt();
  });
});

describe('cairn image build: the size, bad input (nothing is built)', () => {
  it('refuses a size beyond any stick at once, and one too small', async () => {
    for (const [size, message] of [
      ['99999999999999999999', /--size 100000000000000000000 MiB is larger than any USB stick/],
      ['17000000', /--size 17000000 MiB is larger than any USB stick: at most 16777216 MiB/],
      ['512', /--size 512 MiB is too small/],
    ] as const) {
      const started = Date.now();
      const r = await execa(process.execPath, [CLI, 'image', 'build', '--output', scratch.path('never.img'), '--cache', scratch.path('cache'), '--size', size], { reject: false, stdin: 'ignore' });
      expect(r.exitCode, size).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(Date.now() - started).toBeLessThan(20_000);
      expect(existsSync(scratch.path('cache'))).toBe(false);
      expect(existsSync(scratch.path('never.img'))).toBe(false);
    }
  });
});

describe('build-image.sh: bad input stops it before it installs or builds anything', () => {
  const script = (args: string[]) =>
    execa('sh', ['build-image.sh', '--yes', '--output', scratch.path('never-sh.img'), '--cache', scratch.path('cache-sh'), ...args], {
      reject: false,
      stdin: 'ignore',
    });
  const nothingDone = (stderr: string) => {
    expect(stderr).not.toMatch(/Installing|Building/);
    expect(existsSync(scratch.path('cache-sh'))).toBe(false);
    expect(existsSync(scratch.path('never-sh.img'))).toBe(false);
  };

  it('refuses an --accel it does not know', async () => {
    const r = await script(['--accel', 'fast']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/--accel fast is not auto, kvm or tcg/);
    nothingDone(r.stderr);
  });

  it('refuses to write this machine\'s own disk, and never suggests unmounting it', async () => {
    const root = (await execa('findmnt', ['-nvo', 'SOURCE', '/'])).stdout.trim();
    const disk = (await execa('lsblk', ['-nso', 'NAME,TYPE', root])).stdout
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter(([, type]) => type === 'disk')
      .map(([name]) => name)
      .pop();
    expect(disk, `the disk under ${root}`).toBeTruthy();
    const r = await script(['--target', `/dev/${disk}`]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`/dev/${disk} is the disk this machine runs from .*refusing to overwrite it`));
    expect(r.stderr).not.toMatch(/unmount/);
    nothingDone(r.stderr);
  });

  it('refuses a target that is not a block device', async () => {
    const r = await script(['--target', scratch.path('not-a-device')]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/not-a-device is not a block device/);
    nothingDone(r.stderr);
  });
});
