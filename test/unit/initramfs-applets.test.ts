/**
 * The applet check of an initramfs build against Alpine's real busybox
 * (../shared/alpine, run through musl's loader from its package): it has
 * every applet the early boot runs, mke2fs and cttyhack not among them;
 * mkfs.ext4 comes from e2fsprogs. A busybox that lacks one is refused by
 * name, and every hint names an option or package that exists.
 */
import { execa } from 'execa';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { imageCommand } from '../../src/commands/image.js';
import { initramfsCommand } from '../../src/commands/initramfs.js';
import { busyboxApplets, busyboxHint, REQUIRED_APPLETS, requireProgram } from '../../src/initramfs/programs.js';
import { AppletMissingError, ToolMissingError } from '../../src/lib/errors.js';
import { alpinePackage, requireAlpinePackages, unpackAlpinePackages } from '../helpers/initramfs-env.js';

const dir = mkdtempSync(join(tmpdir(), 'cairn-applets-'));
const alpine = join(dir, 'alpine');
const alpineWithE2fsprogs = join(dir, 'alpine-e2fsprogs');

/** A program that runs Alpine's busybox with musl's loader, its --list-full output passed through FILTER. */
function alpineBusybox(name: string, filter = 'cat'): string {
  const path = join(dir, name);
  writeFileSync(
    path,
    `#!/bin/sh\n'${alpine}/lib/ld-musl-x86_64.so.1' --library-path '${alpine}/lib' '${alpine}/bin/busybox' "$@" | ${filter}\n`,
    { mode: 0o755 },
  );
  return path;
}

beforeAll(async () => {
  requireAlpinePackages();
  await unpackAlpinePackages(alpine, ['musl', 'busybox']);
  await unpackAlpinePackages(alpineWithE2fsprogs, ['musl', 'busybox', 'e2fsprogs']);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The long options of `cairn <group> build`. */
function buildOptions(group: 'image' | 'initramfs'): string[] {
  const command = (group === 'image' ? imageCommand() : initramfsCommand()).commands.find((c) => c.name() === 'build');
  return command!.options.map((o) => o.long!);
}

describe("the applet check with Alpine's busybox", () => {
  it('accepts it: it has every applet the early boot runs, though not mke2fs or cttyhack', async () => {
    const applets = await busyboxApplets(alpineBusybox('busybox'));
    const names = applets.map((p) => basename(p));
    expect(names).toEqual(expect.arrayContaining([...REQUIRED_APPLETS]));
    expect(applets).toEqual(expect.arrayContaining(['sbin/switch_root', 'sbin/modprobe', 'usr/bin/setsid', 'bin/sh']));
    // Really Alpine's configuration.
    expect(names).not.toContain('mke2fs');
    expect(names).not.toContain('cttyhack');
  });

  it("finds e2fsprogs' mkfs.ext4 in an Alpine root, and without e2fsprogs names the package that brings it", async () => {
    expect(requireProgram('mkfs.ext4', undefined, alpineWithE2fsprogs)).toBe('/sbin/mkfs.ext4');
    let error: unknown;
    try {
      requireProgram('mkfs.ext4', undefined, alpine);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ToolMissingError);
    expect((error as ToolMissingError).hint).toContain('apk add e2fsprogs');
    const files = (await execa('tar', ['-tzf', alpinePackage('e2fsprogs'), '--ignore-zeros', '--warning=no-unknown-keyword'])).stdout.split('\n');
    expect(files).toContain('sbin/mkfs.ext4');
  });

  it('refuses a busybox that lacks an applet the early boot runs, naming the applet', async () => {
    const lacking = alpineBusybox('busybox-without-switch_root', "grep -v '/switch_root$'");
    const refused = busyboxApplets(lacking);
    await expect(refused).rejects.toThrow(AppletMissingError);
    await expect(refused).rejects.toThrow(`${lacking} lacks the applet(s) the early boot needs: switch_root`);
    await expect(refused).rejects.toMatchObject({ hint: busyboxHint('/', 'applets') });
  });
});

describe('the hints about busybox', () => {
  it.each([
    ['this machine', '/'],
    ["an image's root", '/var/cache/cairn-build/root'],
  ])('for %s name only options the command they name has, and Alpine packages that exist', (_, root) => {
    for (const problem of ['missing', 'applets'] as const) {
      const hint = busyboxHint(root, problem);
      const group = hint.includes('cairn initramfs build') ? 'initramfs' : 'image';
      // An image's busybox is the image's own: no option of `cairn initramfs build` changes it.
      expect(group).toBe(root === '/' ? 'initramfs' : 'image');
      const options = hint.match(/--[a-z-]+/g) ?? [];
      expect(options.length, hint).toBeGreaterThan(0);
      for (const option of options) expect(buildOptions(group), `${option} in "${hint}"`).toContain(option);
      const packages = hint.match(/(?<=apk add |Alpine: |Alpine's )[a-z0-9-]+/g) ?? [];
      expect(packages.length, hint).toBeGreaterThan(0);
      for (const pkg of packages) expect(() => alpinePackage(pkg), hint).not.toThrow();
    }
  });
});
