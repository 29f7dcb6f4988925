/**
 * `cairn grub config` against a real data partition holding real states made
 * by `cairn save`: the grub.cfg it writes passes GRUB's own syntax check, and
 * every kernel command line in it, rebuilt the way GRUB rebuilds it, is read
 * by the initramfs's own parser (busybox sh) as the entry means it.
 */
import { execa } from 'execa';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, open, readdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readWords } from '../helpers/grub-words.js';
import { BUSYBOX, busyboxSh, keyValues } from '../helpers/initramfs-env.js';
import { cairn, requireSystem, Scratch } from '../helpers/system.js';

const GRUB_SCRIPT_CHECK = '/usr/bin/grub-script-check';
const LIB = resolve('initramfs/lib');
const session = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();

interface Entry {
  title: string;
  id: string;
  search: string[];
  linux: string[];
  initrd: string[];
}

/** The menu entries of a grub.cfg, each command read as GRUB (like sh) splits it into words. */
function parseEntries(cfg: string): Entry[] {
  const out: Entry[] = [];
  const lines = cfg.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const head = lines[i]!;
    if (!head.startsWith('menuentry ')) continue;
    const [, title, opt, id] = readWords(head.replace(/ \{$/, '').replace('$menuentry_id_option', '--id'));
    expect(opt).toBe('--id');
    const cmds: string[][] = [];
    while (lines[++i] !== '}') if (/^\s*(search|linux|initrd) /.test(lines[i]!)) cmds.push(readWords(lines[i]!.trim()));
    const cmd = (name: string) => cmds.find((c) => c[0] === name) ?? [];
    out.push({ title: title!, id: id!, search: cmd('search'), linux: cmd('linux'), initrd: cmd('initrd') });
  }
  return out;
}

/**
 * The command line the kernel gets from `linux FILE ARGS...`: GRUB 2.06
 * (grub_create_loader_cmdline) puts BOOT_IMAGE=FILE first, a backslash before
 * \ ' and ", and double quotes round an argument holding a space.
 */
function grubCmdline(linux: string[]): string {
  const [, file, ...args] = linux;
  return [`BOOT_IMAGE=${file}`, ...args]
    .map((a) => {
      const escaped = a.replace(/[\\'"]/g, '\\$&');
      return /\s/.test(a) ? `"${escaped}"` : escaped;
    })
    .join(' ');
}

/** Runs the initramfs's cmdline_parse on a fake $ROOT/proc/cmdline; its variables and what it said. */
async function initramfsParse(root: string, cmdline: string) {
  await mkdir(join(root, 'proc'), { recursive: true });
  await writeFile(join(root, 'proc', 'cmdline'), `${cmdline}\n`);
  const script = `
    set -e
    for f in names config log size cmdline; do . "${LIB}/$f.sh"; done
    cmdline_parse
    echo "boot=$cairn_boot"
    echo "upper=$cairn_upper"
    echo "upper_size=$cairn_upper_size"
    echo "data=$cairn_data"
  `;
  const r = await busyboxSh(script, { env: { ROOT: root }, namespace: false });
  expect(r.exitCode, r.stderr).toBe(0);
  return { vars: keyValues(r.stdout), console: r.stderr };
}

async function grubScriptCheck(file: string): Promise<void> {
  const r = await execa(GRUB_SCRIPT_CHECK, [file], { reject: false });
  expect(r.exitCode, `grub-script-check ${file}: ${r.stdout}\n${r.stderr}`).toBe(0);
}

/** Flips one byte in the middle of a file, as a failing stick would. */
async function flipByte(path: string): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const { size } = await fh.stat();
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, Math.floor(size / 3));
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, Math.floor(size / 3));
  } finally {
    await fh.close();
  }
}

describe('cairn grub config', () => {
  const s = new Scratch();
  let data: string;
  let upper: string;
  let esp: string;
  let roots = 0;

  const save = async (marker: string, record?: string) => {
    await writeFile(join(upper, 'marker'), marker);
    const r = await cairn(['save', '--upper', upper, '--data', data, ...(record ? ['--boot-record', record] : [])]);
    if (r.exitCode !== 0) throw new Error(`save ${marker} failed: ${r.stderr}`);
  };
  const idOf = async (name: string): Promise<string> => {
    const st = JSON.parse((await cairn(['status', '--data', data, '--json', '--quick'])).stdout);
    return st.states.find((x: { name: string }) => x.name === name).id;
  };
  /** A session booted from the backup: its save keeps the newest as an older generation. */
  const backupBoot = async (sess: string) => {
    const path = s.path(`boot-${sess}`);
    await writeFile(path, `requested=backup\nused=backup\nstate_id=${await idOf('upperfs-backup.squashfs')}\nupper=tmpfs\nsession=${sess}\n`);
    return path;
  };
  const config = async (args: string[]) => {
    const r = await cairn(['grub', 'config', '--data', data, ...args]);
    expect(r.exitCode, r.stderr).toBe(0);
    return r;
  };

  beforeAll(async () => {
    requireSystem();
    if (!existsSync(GRUB_SCRIPT_CHECK)) throw new Error(`these tests need ${GRUB_SCRIPT_CHECK}: apt-get install grub-common`);
    if (!existsSync(BUSYBOX)) throw new Error(`these tests need ${BUSYBOX}: apt-get install busybox-static`);
    data = await s.dataPartition('data', 128);
    upper = s.path('upper');
    esp = s.path('esp', 'grub');
    await mkdir(upper);
    await mkdir(esp, { recursive: true });
    // newest and backup, then two sessions booted from the backup: two older generations.
    await save('one');
    await save('two');
    await save('three');
    await save('four', await backupBoot('session-a'));
    await save('five', await backupBoot('session-b'));
    const names = (await readdir(data)).filter((n) => n.endsWith('.squashfs')).sort();
    expect(names).toEqual(['upperfs-backup.squashfs', 'upperfs-gen-1.squashfs', 'upperfs-gen-2.squashfs', 'upperfs.squashfs']);
  });
  afterAll(() => s.cleanup());

  it('writes a grub.cfg that grub-script-check accepts, with an entry per state, newest generation first', async () => {
    const out = join(esp, 'grub.cfg');
    const r = await config(['--output', out]);
    expect(r.stdout).toBe(`wrote ${out}: default, backup, clean, gen-2, gen-1`);
    expect(existsSync(`${out}.tmp`)).toBe(false);
    await grubScriptCheck(out);
    const cfg = readFileSync(out, 'utf8');
    const entries = parseEntries(cfg);
    expect(entries.map((e) => e.id)).toEqual(['cairn-default', 'cairn-backup', 'cairn-clean', 'cairn-gen-2', 'cairn-gen-1']);
    expect(entries.slice(0, 3).map((e) => e.title)).toEqual([
      'cairn (newest state)',
      'cairn (backup state)',
      'cairn (clean: nothing loaded, nothing saved)',
    ]);
    for (const e of entries.slice(3)) expect(e.title).toMatch(/^cairn \(older state [12], saved \d{4}-\d\d-\d\d \d\d:\d\d UTC\)$/);
    for (const e of entries) {
      expect(e.search).toEqual(['search', '--no-floppy', '--set=root', '--label', 'CAIRN-ESP']);
      expect(e.linux[1]).toBe('/vmlinuz-lts');
      expect(e.initrd).toEqual(['initrd', '/initramfs-lts']);
    }
    expect(cfg).toMatch(/^set default=cairn-default$/m);
    expect(cfg).toMatch(/^set timeout=3$/m);
  });

  it('every kernel command line parses in the initramfs as its entry means it, without a warning', async () => {
    const out = join(esp, 'grub.cfg');
    await config(['--output', out]);
    for (const e of parseEntries(readFileSync(out, 'utf8'))) {
      const cmdline = grubCmdline(e.linux);
      expect(cmdline).toMatch(/ console=tty0 console=ttyS0,115200$/);
      const { vars, console } = await initramfsParse(s.path(`root-${roots++}`), cmdline);
      expect(vars).toEqual({ boot: e.id.replace(/^cairn-/, ''), upper: 'zram', upper_size: '50%', data: 'LABEL=cairn-data' });
      expect(console).toBe('');
    }
  });

  it('passes the upper layer, its size, the data partition and the ESP as given', async () => {
    const out = join(esp, 'grub.cfg');
    await config([
      '--output', out,
      '--upper-type', 'tmpfs',
      '--upper-size', '75%',
      '--data-spec', 'UUID=0b7c3f7e-2d5e-4a51-9c59-3d1d2f1d9a10',
      '--esp-spec', 'UUID=1234-ABCD',
      '--flavor', 'virt',
      '--timeout', '10',
      '--serial-speed', '38400',
      '--primary-console', 'screen',
      '--default', 'gen-1',
    ]);
    await grubScriptCheck(out);
    const cfg = readFileSync(out, 'utf8');
    expect(cfg).toMatch(/^set default=cairn-gen-1$/m);
    expect(cfg).toMatch(/^set timeout=10$/m);
    expect(cfg).toContain('serial --unit=0 --speed=38400');
    for (const e of parseEntries(cfg)) {
      expect(e.search).toEqual(['search', '--no-floppy', '--set=root', '--fs-uuid', '1234-ABCD']);
      expect([e.linux[1], e.initrd[1]]).toEqual(['/vmlinuz-virt', '/initramfs-virt']);
      const cmdline = grubCmdline(e.linux);
      expect(cmdline).toMatch(/ console=ttyS0,38400 console=tty0$/);
      const { vars, console } = await initramfsParse(s.path(`root-${roots++}`), cmdline);
      expect(vars).toEqual({
        boot: e.id.replace(/^cairn-/, ''),
        upper: 'tmpfs',
        upper_size: '75%',
        data: 'UUID=0b7c3f7e-2d5e-4a51-9c59-3d1d2f1d9a10',
      });
      expect(console).toBe('');
    }
  });

  it('keeps a hostile ESP label and kernel path inside their words, and grub-script-check accepts it', async () => {
    const out = join(esp, 'hostile.cfg');
    const label = `it's $root; } menuentry x { \`reboot\` "q" \\ *`;
    await config(['--output', out, '--esp-spec', `LABEL=${label}`, '--kernel', "/k'$(x)"]);
    await grubScriptCheck(out);
    for (const e of parseEntries(readFileSync(out, 'utf8'))) {
      expect(e.search).toEqual(['search', '--no-floppy', '--set=root', '--label', label]);
      expect(e.linux[1]).toBe("/k'$(x)");
    }
  });

  it('marks a damaged state: a flipped byte is seen with --full, and the entry stays bootable', async () => {
    await flipByte(join(data, 'upperfs-gen-1.squashfs'));
    const out = join(esp, 'grub.cfg');
    const quick = parseEntries(readFileSync((await config(['--output', out]), out), 'utf8'));
    expect(quick.find((e) => e.id === 'cairn-gen-1')!.title).not.toMatch(/damaged/);

    const r = await config(['--output', out, '--full']);
    expect(r.stdout).toContain('(gen-1 damaged)');
    await grubScriptCheck(out);
    const entries = parseEntries(readFileSync(out, 'utf8'));
    const gen1 = entries.find((e) => e.id === 'cairn-gen-1')!;
    expect(gen1.title).toMatch(/^cairn \(older state 1, saved .* UTC\) \[damaged\]$/);
    expect(entries.filter((e) => /damaged/.test(e.title)).map((e) => e.id)).toEqual(['cairn-gen-1']);
    const { vars } = await initramfsParse(s.path(`root-${roots++}`), grubCmdline(gen1.linux));
    expect(vars.boot).toBe('gen-1');
  });

  it('refuses what a kernel command line cannot carry, and a missing ESP directory, writing nothing', async () => {
    const out = join(esp, 'refused.cfg');
    const bad = await cairn(['grub', 'config', '--data', data, '--output', out, '--data-spec', 'LABEL=my data']);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/cairn\.data=LABEL=my data cannot go on a kernel command line/);
    const noDir = await cairn(['grub', 'config', '--data', data, '--output', s.path('not-mounted', 'grub', 'grub.cfg')]);
    expect(noDir.exitCode).not.toBe(0);
    expect(noDir.stderr).toMatch(/not a directory[\s\S]*is the ESP mounted/);
    const noGen = await cairn(['grub', 'config', '--data', data, '--output', out, '--default', 'gen-9']);
    expect(noGen.exitCode).toBe(2);
    expect(existsSync(out)).toBe(false);
  });

  it('prints the menu with --output -', async () => {
    const r = await config(['--output', '-']);
    expect(r.stdout).toMatch(/^menuentry 'cairn \(newest state\)' \$menuentry_id_option cairn-default \{$/m);
  });
});
