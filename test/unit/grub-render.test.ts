import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildMenu, DEFAULT_SETTINGS, type BootSettings, type MenuState } from '../../src/grub/menu.js';
import { fillTemplate, GRUB_TEMPLATE, renderGrubConfig } from '../../src/grub/render.js';
import { HOSTILE, readWords } from '../helpers/grub-words.js';

const gen = (n: number): MenuState => ({
  role: 'generation',
  generation: n,
  check: { ok: true, seal: { size: 1, sha256: 'a'.repeat(64), id: `g${n}`, parent: '', session: '', created: 1_700_000_000, files: 1, space: 0 }, fileSize: 4097 },
});
const render = (settings: Partial<BootSettings> = {}, states: MenuState[] = [], timeoutSeconds = 3) =>
  renderGrubConfig(buildMenu(states, { ...DEFAULT_SETTINGS, ...settings }, { timeoutSeconds }));

/** The menuentry blocks: title line and the commands inside, as words. */
function entries(cfg: string): { head: string[]; body: string[][] }[] {
  const out: { head: string[]; body: string[][] }[] = [];
  const lines = cfg.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i]!.startsWith('menuentry ')) continue;
    const head = readWords(lines[i]!.replace(/\$menuentry_id_option/, '--id').replace(/ \{$/, ''));
    const body: string[][] = [];
    // The commands that load; the counting around them is GRUB script read by grub-script-check (test/system/grub-config.test.ts).
    while (lines[++i] !== '}') if (/^\s*(search|linux|initrd) /.test(lines[i]!)) body.push(readWords(lines[i]!.trim()));
    out.push({ head, body });
  }
  return out;
}

describe('the template', () => {
  it('is grub/grub.cfg.in, built in', () => {
    expect(GRUB_TEMPLATE).toBe(readFileSync('grub/grub.cfg.in', 'utf8'));
  });
});

describe('renderGrubConfig', () => {
  it('sets the serial port, the terminals per platform, the timeout and the default by id', () => {
    const cfg = render({ serialSpeed: 57600 }, [], 5);
    expect(cfg).toContain('if serial --unit=0 --speed=57600 --word=8 --parity=no --stop=1; then');
    expect(cfg).toMatch(/if \[ "\$\{grub_platform\}" = efi \]; then\n\s+terminal_input console\n\s+else\n\s+terminal_input serial console\n\s+fi\n\s+terminal_output serial console/);
    expect(cfg).toMatch(/^set timeout=5$/m);
    expect(cfg).toMatch(/^set default=cairn-default$/m);
    expect(cfg).not.toMatch(/@[A-Z_]+@/);
  });

  it('writes one entry per menu entry, each finding the ESP by label and loading kernel and initramfs from it', () => {
    const cfg = render({}, [gen(2)]);
    const e = entries(cfg);
    expect(e.map((x) => x.head)).toEqual([
      ['menuentry', 'cairn (newest state) [none saved yet]', '--id', 'cairn-default'],
      ['menuentry', 'cairn (backup state) [none saved yet]', '--id', 'cairn-backup'],
      ['menuentry', 'cairn (clean: nothing loaded, nothing saved)', '--id', 'cairn-clean'],
      ['menuentry', 'cairn (older state 2, saved 2023-11-14 22:13 UTC)', '--id', 'cairn-gen-2'],
    ]);
    for (const [i, boot] of ['default', 'backup', 'clean', 'gen-2'].entries()) {
      const body = e[i]!.body;
      expect(body[0]).toEqual(['search', '--no-floppy', '--set=root', '--label', 'CAIRN-ESP']);
      expect(body.find((w) => w[0] === 'linux')).toEqual([
        'linux',
        '/vmlinuz-lts',
        `cairn.boot=${boot}`,
        'cairn.upper=zram',
        'cairn.data=LABEL=cairn-data',
        'panic=10',
        'console=tty0',
        'console=ttyS0,115200',
      ]);
      expect(body.find((w) => w[0] === 'initrd')).toEqual(['initrd', '/initramfs-lts']);
    }
  });

  it('finds the ESP by file-system UUID when given one', () => {
    const e = entries(render({ esp: { by: 'uuid', value: '1234-ABCD' } }));
    expect(e[0]!.body[0]).toEqual(['search', '--no-floppy', '--set=root', '--fs-uuid', '1234-ABCD']);
  });

  it.each(HOSTILE.filter((h) => h.trim() !== '' && !/[\x00-\x1f]/.test(h)))(
    'keeps a hostile ESP label and kernel path (%j) inside their words',
    (h) => {
      const e = entries(render({ esp: { by: 'label', value: h }, kernel: `/${h}`, initrd: `/i${h}` }));
      for (const x of e) {
        expect(x.body[0]).toEqual(['search', '--no-floppy', '--set=root', '--label', h]);
        expect(x.body.find((w) => w[0] === 'linux')![1]).toBe(`/${h}`);
        expect(x.body.find((w) => w[0] === 'initrd')).toEqual(['initrd', `/i${h}`]);
      }
    },
  );
});

describe('fillTemplate', () => {
  it('fills each placeholder once, without reading a value again', () => {
    expect(fillTemplate('a=@A@ b=@B@ a=@A@', { A: '@B@', B: '$x' })).toBe('a=@B@ b=$x a=@B@');
  });
  it('fails on a placeholder it has no value for, and on a value without a placeholder', () => {
    expect(() => fillTemplate('@A@ @C@', { A: '1' })).toThrow(/unknown placeholder @C@/);
    expect(() => fillTemplate('@A@', { A: '1', B: '2' })).toThrow(/lacks @B@/);
  });
});
