/**
 * The kernel command line, parsed by cmdline_parse from a fake
 * $ROOT/proc/cmdline, and cairn.upper_size turned into bytes against a fake
 * /proc/meminfo. busybox sh, as in the initramfs.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyValues, requireRoot, requireTools } from '../../helpers/initramfs-env.js';
import { Sandbox } from './fixtures.js';

let sb: Sandbox;

beforeAll(async () => {
  requireRoot('each script runs in its own mount namespace');
  requireTools(['busybox', 'unshare']);
  sb = await Sandbox.create('cmdline');
});

afterAll(async () => {
  await sb?.cleanup();
});

const PRINT = `
cmdline_parse
echo "boot=$cairn_boot"
echo "upper=$cairn_upper"
echo "upper_size=$cairn_upper_size"
echo "data=$cairn_data"
echo "debug=$cairn_debug"
echo "init=$cairn_init"
`;

let rootCount = 0;

/** Parses CMDLINE; the variables, what was said on the console and in kmsg. */
async function parse(cmdline: string, env: Record<string, string> = {}) {
  const root = await sb.root(`root-${rootCount++}`, { cmdline });
  const r = await sb.lib(PRINT, { root, binds: [], run: false, env });
  expect(r.exitCode, r.stderr).toBe(0);
  return { vars: keyValues(r.stdout), console: r.stderr, kmsg: await readFile(`${root}/kmsg`, 'utf8') };
}

const DEFAULTS = {
  boot: 'default',
  upper: 'zram',
  upper_size: '50%',
  data: 'LABEL=cairn-data',
  debug: '0',
  init: '/sbin/init',
};

describe('cmdline_parse', () => {
  it('gives the defaults, silently, when no cairn parameter is there', async () => {
    const { vars, console } = await parse('BOOT_IMAGE=/vmlinuz-lts root=/dev/ram0 ro quiet splash');
    expect(vars).toEqual(DEFAULTS);
    expect(console).toBe('');
  });

  it('takes every good value', async () => {
    const { vars, console } = await parse(
      'quiet cairn.boot=backup cairn.upper=tmpfs cairn.upper_size=2G cairn.data=UUID=1234-abcd cairn.debug=1 init=/bin/openrc-init',
    );
    expect(vars).toEqual({
      boot: 'backup',
      upper: 'tmpfs',
      upper_size: '2G',
      data: 'UUID=1234-abcd',
      debug: '1',
      init: '/bin/openrc-init',
    });
    expect(console).not.toMatch(/warning/);
  });

  it.each([
    ['cairn.boot=clean', { boot: 'clean' }],
    ['cairn.boot=gen-1', { boot: 'gen-1' }],
    ['cairn.boot=gen-42', { boot: 'gen-42' }],
    ['cairn.upper_size=512M', { upper_size: '512M' }],
    ['cairn.upper_size=75%', { upper_size: '75%' }],
    ['cairn.upper_size=1073741824', { upper_size: '1073741824' }],
    ['cairn.data=/dev/sdb2', { data: '/dev/sdb2' }],
    ['cairn.data=LABEL=my-stick', { data: 'LABEL=my-stick' }],
    ['cairn.debug', { debug: '1' }],
    ['cairn.debug=0', { debug: '0' }],
  ])('takes %s', async (cmdline, expected) => {
    const { vars, console } = await parse(`ro ${cmdline} quiet`);
    expect(vars).toEqual({ ...DEFAULTS, ...expected });
    expect(console).not.toMatch(/warning/);
  });

  it.each([
    ['cairn.boot=newest', 'cairn.boot=newest', 'using default', { boot: 'default' }],
    ['cairn.boot=gen-0', 'cairn.boot=gen-0', 'using default', { boot: 'default' }],
    ['cairn.boot=gen-01', 'cairn.boot=gen-01', 'using default', { boot: 'default' }],
    ['cairn.boot=gen-x', 'cairn.boot=gen-x', 'using default', { boot: 'default' }],
    ['cairn.boot', 'cairn.boot=', 'using default', { boot: 'default' }],
    ['cairn.upper=btrfs', 'cairn.upper=btrfs', 'using zram', { upper: 'zram' }],
    ['cairn.upper_size=lots', 'cairn.upper_size=lots', 'using 50%', { upper_size: '50%' }],
    ['cairn.upper_size=150%', 'cairn.upper_size=150%', 'using 50%', { upper_size: '50%' }],
    ['cairn.upper_size=0', 'cairn.upper_size=0', 'using 50%', { upper_size: '50%' }],
    ['cairn.upper_size=2GB', 'cairn.upper_size=2GB', 'using 50%', { upper_size: '50%' }],
    ['cairn.upper_size=99999999999T', 'cairn.upper_size=99999999999T', 'using 50%', { upper_size: '50%' }],
    ['cairn.data=sdb2', 'cairn.data=sdb2', 'using LABEL=cairn-data', { data: 'LABEL=cairn-data' }],
    ['cairn.data=LABEL=', 'cairn.data=LABEL=', 'using LABEL=cairn-data', { data: 'LABEL=cairn-data' }],
    ['cairn.debug=yes', 'cairn.debug=yes', 'using cairn.debug=0', { debug: '0' }],
    ['init=sbin/init', 'init=sbin/init', 'using /sbin/init', { init: '/sbin/init' }],
  ])('replaces %s by the default and says so', async (cmdline, named, replacement, expected) => {
    const { vars, console, kmsg } = await parse(`quiet ${cmdline}`);
    expect(vars).toEqual({ ...DEFAULTS, ...expected });
    const line = console.split('\n').find((l) => l.includes('warning'));
    expect(line).toContain(named);
    expect(line).toContain(replacement);
    // The same message goes to the kernel log, as a warning.
    expect(kmsg).toContain(`<4>cairn: warning: ${named}`);
  });

  it('replaces a bad value by the default even after a good one', async () => {
    const { vars } = await parse('cairn.boot=backup cairn.boot=bogus');
    expect(vars.boot).toBe('default');
  });

  it('lets the last of repeated parameters win, as the kernel does', async () => {
    const { vars } = await parse('cairn.upper=tmpfs cairn.upper=zram cairn.boot=clean cairn.boot=backup');
    expect(vars).toMatchObject({ upper: 'zram', boot: 'backup' });
  });

  it('warns about unknown cairn parameters and ignores all other unknown ones', async () => {
    const { vars, console } = await parse('foo=bar cairn.bot=backup acpi=off cairn.upper=tmpfs');
    expect(vars).toEqual({ ...DEFAULTS, upper: 'tmpfs' });
    expect(console.trim().split('\n')).toEqual(['cairn: warning: unknown parameter cairn.bot=backup ignored']);
  });

  it('splits at blanks outside double quotes and drops the quotes, as the kernel does', async () => {
    const { vars } = await parse('quiet cairn.data="LABEL=my data"\tcairn.upper="tmpfs" x="a b"');
    expect(vars).toMatchObject({ data: 'LABEL=my data', upper: 'tmpfs' });
  });

  it('leaves the parameters after -- to init', async () => {
    const { vars } = await parse('cairn.boot=backup -- cairn.boot=clean single');
    expect(vars.boot).toBe('backup');
  });

  it('evaluates nothing from the command line', async () => {
    const marker = sb.path('pwned');
    const { vars, console } = await parse(
      `cairn.boot=$(touch${'$'}{IFS}${marker}) cairn.data=LABEL=\`touch${'$'}{IFS}${marker}\` cairn.upper=;touch${'$'}{IFS}${marker}`,
    );
    expect(existsSync(marker)).toBe(false);
    expect(vars.boot).toBe('default');
    expect(vars.data).toBe(`LABEL=\`touch\${IFS}${marker}\``);
    expect(console).toContain(`cairn.boot=$(touch\${IFS}${marker})`);
  });

  it('uses the defaults, and says so, when the command line cannot be read', async () => {
    const root = await sb.root(`root-${rootCount++}`);
    const r = await sb.lib(`rm "$ROOT/proc/cmdline"\n${PRINT}`, { root, binds: [], run: false });
    expect(keyValues(r.stdout)).toEqual(DEFAULTS);
    expect(r.stderr).toMatch(/cannot read the kernel command line .*proc\/cmdline.*; using the defaults/);
  });

  it('shows the settings it ended with in debug mode', async () => {
    const { console } = await parse('cairn.debug=1 cairn.boot=backup');
    expect(console).toContain('cairn: debug: cairn.boot=backup cairn.upper=zram');
  });
});

describe('upper_size_bytes', () => {
  const GiB = 1024 ** 3;
  const MiB = 1024 ** 2;

  async function bytes(spec: string, memKiB = 8 * 1024 * 1024) {
    const root = await sb.root(`root-${rootCount++}`, { memKiB });
    const r = await sb.lib(`upper_size_bytes '${spec}'`, { root, binds: [], run: false });
    expect(r.exitCode, r.stderr).toBe(0);
    return { bytes: Number(r.stdout.trim()), console: r.stderr };
  }

  it.each([
    ['2G', 2 * GiB],
    ['512M', 512 * MiB],
    ['1048576000', 1048576000],
    ['50%', 4 * GiB],
    ['25%', 2 * GiB],
    ['100%', 8 * GiB],
  ])('turns %s into bytes (8 GiB of RAM)', async (spec, expected) => {
    const r = await bytes(spec);
    expect(r.bytes).toBe(expected);
    expect(r.console).toBe('');
  });

  it('computes above 4 GiB without overflow', async () => {
    expect((await bytes('3T')).bytes).toBe(3 * 1024 * GiB);
    expect((await bytes('50%', 64 * 1024 * 1024)).bytes).toBe(32 * GiB);
  });

  it('replaces a size below the minimum (16 MiB) by the default, and says so', async () => {
    const r = await bytes('1M');
    expect(r.bytes).toBe(4 * GiB);
    expect(r.console).toMatch(/warning: an upper layer of 1M is too small.*minimum 16 MiB.*using 4096 MiB/);
  });

  it('falls back to the minimum when the RAM size cannot be read', async () => {
    const root = await sb.root(`root-${rootCount++}`);
    const r = await sb.lib(`rm "$ROOT/proc/meminfo"; upper_size_bytes 50%`, { root, binds: [], run: false });
    expect(Number(r.stdout.trim())).toBe(16 * MiB);
    expect(r.stderr).toMatch(/cannot read the RAM size/);
  });
});
