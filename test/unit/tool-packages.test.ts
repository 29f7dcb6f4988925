/**
 * The programs cairn runs on the alpine base, where busybox links every
 * applet it has into PATH and util-linux is split into a package per
 * program: one found as busybox's applet is named missing with the package
 * that brings the real one (src/lib/toolPackages.ts), before cairn runs it
 * with options the applet does not know.
 */
import { execa } from 'execa';
import { mkdtempSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { alpinePackages } from '../../src/image/alpine.js';
import { ToolMissingError } from '../../src/lib/errors.js';
import { run } from '../../src/lib/run.js';
import { toolHint } from '../../src/lib/toolPackages.js';

const BUSYBOX = '/usr/bin/busybox';

describe('programs on the alpine base', () => {
  const bin = mkdtempSync(join(tmpdir(), 'cairn-bb-'));
  afterAll(() => execa('rm', ['-rf', bin]));

  it('a losetup that is busybox\'s applet is named, with the alpine package, and not run', async () => {
    // As Alpine's busybox trigger links it where util-linux's losetup is not installed.
    symlinkSync(BUSYBOX, join(bin, 'losetup'));
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      const e = await run('losetup', ['--associated', '/nonexistent', '--noheadings', '--output', 'NAME'], { timeoutMs: 10_000 }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(ToolMissingError);
      expect((e as Error).message).toBe(`losetup at ${bin}/losetup is busybox's, which lacks the options cairn uses`);
      expect((e as ToolMissingError).hint).toBe('install losetup on alpine / mount on debian (apk add losetup / apt-get install mount)');
    } finally {
      process.env.PATH = path;
    }
  });

  it('a program busybox does well enough is run as busybox\'s', async () => {
    symlinkSync(BUSYBOX, join(bin, 'truncate'));
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      await expect(run('truncate', ['-s', '1', join(bin, 'file')], { timeoutMs: 10_000 })).resolves.toMatchObject({ exitCode: 0 });
    } finally {
      process.env.PATH = path;
    }
  });

  it('a missing program is named with the package of each base', async () => {
    const path = process.env.PATH;
    process.env.PATH = bin;
    try {
      const e = await run('getfattr', ['--version'], { timeoutMs: 10_000 }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(ToolMissingError);
      expect((e as ToolMissingError).hint).toBe('install attr (apk add attr / apt-get install attr)');
    } finally {
      process.env.PATH = path;
    }
    expect(toolHint('debugfs')).toMatch(/apk add e2fsprogs-extra/);
    expect(toolHint('setpriv')).toMatch(/apk add setpriv/);
  });

  it('the alpine base installs, by name, the util-linux programs whose busybox applets fall short', () => {
    const packages = alpinePackages({ kernelPackage: 'linux-virt', luks: false });
    for (const p of ['losetup', 'setpriv', 'blkid', 'lsblk', 'findmnt', 'attr', 'squashfs-tools']) expect(packages).toContain(p);
  });
});
