import { describe, expect, it } from 'vitest';
import { formatGrubEnv, GRUBENV_SIZE, parseGrubEnv } from '../../src/boot/grubenv.js';
import { arm, describeTries, markGood, parseBootTries, retry, triesOf, withTries, type Tries } from '../../src/boot/tries.js';
import { buildMenu, DEFAULT_SETTINGS, ROLLBACK_ID } from '../../src/grub/menu.js';
import { renderGrubConfig } from '../../src/grub/render.js';

describe('GRUB\'s environment block', () => {
  it('is 1024 bytes: the header, the variables, # to the end; and reads back', () => {
    const block = formatGrubEnv(new Map([['cairn_state_tries', '3'], ['other', 'kept']]));
    expect(block.length).toBe(GRUBENV_SIZE);
    expect(block.toString('latin1')).toMatch(/^# GRUB Environment Block\ncairn_state_tries=3\nother=kept\n#+$/);
    expect([...parseGrubEnv(block, 'x')]).toEqual([['cairn_state_tries', '3'], ['other', 'kept']]);
  });

  it('refuses a block of another size or without the header, and a value GRUB could not read back', () => {
    expect(() => parseGrubEnv(Buffer.alloc(1024, '#'), '/grub/grubenv')).toThrow(/not a GRUB environment block/);
    expect(() => parseGrubEnv(Buffer.from('# GRUB Environment Block\n'), '/grub/grubenv')).toThrow(/not a GRUB environment block/);
    expect(() => formatGrubEnv(new Map([['a', 'x\ny']]))).toThrow(/cannot go into/);
    expect(() => formatGrubEnv(new Map([['a b', 'x']]))).toThrow(/cannot go into/);
    expect(() => formatGrubEnv(new Map([['a', 'x'.repeat(1100)]]))).toThrow(/full/);
  });
});

describe('the tries, new -> on trial -> good or rolled back', () => {
  const good = (t: Tries, kernelOnTrialRan: boolean, newestRan: boolean) => markGood(t, { kernelOnTrialRan, newestRan });

  it('a new state gets the tries; GRUB counts them down; a good boot of it confirms it', () => {
    let t = arm({}, 'state', 3);
    expect(t).toEqual({ state: 3 });
    t = { state: 2 }; // one boot, as GRUB writes it back
    expect(good(t, false, true)).toEqual({});
  });

  it('a boot that did not unpack the newest (a fallback, a rollback, a backup or clean boot picked) leaves its count', () => {
    expect(good({ state: 2 }, true, false)).toEqual({ state: 2 });
    expect(good({ state: 0 }, true, false)).toEqual({ state: 0 });
  });

  it('a kernel is confirmed only when it is the one running; the previous kernel coming up confirms nothing', () => {
    expect(good({ kernel: 1, state: 3 }, true, true)).toEqual({});
    expect(good({ kernel: 0 }, false, true)).toEqual({ kernel: 0 });
  });

  it('retry gives back the tries of what was rolled back, and only of that', () => {
    expect(retry({ kernel: 0, state: 2 }, 3)).toEqual({ kernel: 3, state: 2 });
    expect(retry({ state: 0 }, 5)).toEqual({ state: 5 });
    expect(retry({}, 3)).toEqual({});
    expect(retry({ state: 0 }, 0)).toEqual({});
  });

  it('arming with 0 tries (counting off) takes the subject off trial', () => {
    expect(arm({ state: 2, kernel: 1 }, 'state', 0)).toEqual({ kernel: 1 });
  });

  it('reads the counters from the block, a value GRUB does not know as the most it counts from', () => {
    expect(triesOf(new Map([['cairn_kernel_tries', '2'], ['cairn_state_tries', '']]))).toEqual({ kernel: 2 });
    expect(triesOf(new Map([['cairn_state_tries', 'x']]))).toEqual({ state: 8 });
    expect([...withTries(new Map([['keep', '1'], ['cairn_state_tries', '0']]), { kernel: 3 })]).toEqual([['keep', '1'], ['cairn_kernel_tries', '3']]);
  });

  it('says each phase in words', () => {
    expect(describeTries('state', undefined, 3)).toBe('the newest state: confirmed');
    expect(describeTries('kernel', 2, 3)).toBe('the default kernel: on trial, 2 of 3 tries left until a boot is marked good');
    expect(describeTries('state', 0, 3)).toMatch(/did not come up in 3 tries; GRUB boots the backup \(cairn boot retry/);
  });

  it('takes --boot-tries from 0 to 9 and nothing else', () => {
    expect(parseBootTries('0')).toBe(0);
    expect(parseBootTries('9')).toBe(9);
    for (const bad of ['10', '-1', '3x', '', ' 3']) expect(() => parseBootTries(bad)).toThrow(/--boot-tries/);
  });
});

describe('the menu\'s counting', () => {
  const settings = { ...DEFAULT_SETTINGS, kernel: '/vmlinuz-new', initrd: '/initramfs-new' };
  const previousKernel = { release: 'old', kernel: '/vmlinuz-old', initrd: '/initramfs-old' };

  it('counts in the default entry (kernel first, then the state) and the previous kernel\'s (the state), never in backup or clean', () => {
    const menu = buildMenu([], settings, { timeoutSeconds: 3, previousKernel });
    expect(menu.entries.map((e) => [e.boot, e.counts])).toEqual([
      ['default', ['kernel', 'state']],
      ['backup', undefined],
      ['clean', undefined],
      ['default', ['state']],
    ]);
    const cfg = renderGrubConfig(menu);
    const block = (id: string) => cfg.slice(cfg.indexOf(`$menuentry_id_option ${id} {`), cfg.indexOf('\n}', cfg.indexOf(`$menuentry_id_option ${id} {`)));
    expect(block('cairn-default')).toMatch(/if \[ -n "\$\{cairn_kernel_tries\}" \][\s\S]*elif \[ -n "\$\{cairn_state_tries\}" \]/);
    expect(block('cairn-default')).toMatch(/elif \[ "\$\{cairn_kernel_tries\}" = 3 \]; then set cairn_kernel_tries=2\n/);
    expect(block('cairn-default')).toContain('save_env --file /grub/grubenv cairn_kernel_tries');
    expect(block('cairn-previous-kernel')).not.toContain('cairn_kernel_tries}" = 3');
    expect(block('cairn-previous-kernel')).toContain('save_env --file /grub/grubenv cairn_state_tries');
    for (const id of ['cairn-backup', 'cairn-clean']) expect(block(id)).not.toContain('save_env');
  });

  it('moves the default to the previous kernel or to the rollback entry once the tries are used, and defines that entry only then', () => {
    const cfg = renderGrubConfig(buildMenu([], settings, { timeoutSeconds: 3, previousKernel }));
    expect(cfg).toMatch(/if \[ "\$\{cairn_kernel_tries\}" = 0 \]; then\n.*\n\s+set default=cairn-previous-kernel/);
    expect(cfg).toMatch(/if \[ "\$\{cairn_state_tries\}" = 0 \]; then\n.*\n\s+set default=cairn-rollback/);
    const rollback = cfg.slice(cfg.lastIndexOf('if [ "${cairn_state_tries}" = 0 ]; then\n\tmenuentry'));
    expect(rollback).toContain(`$menuentry_id_option ${ROLLBACK_ID} {`);
    expect(rollback).toMatch(/if \[ "\$\{cairn_kernel_tries\}" = 0 \]; then\n.*\n\s+linux \/vmlinuz-old cairn\.boot=backup .*cairn\.rollback=state\n\s+initrd \/initramfs-old\n\s+else\n.*\n\s+linux \/vmlinuz-new cairn\.boot=backup .*cairn\.rollback=state/);
    expect(rollback).not.toContain('save_env');
  });

  it('with boot tries 0: no counting, no rollback entry, no panic restart', () => {
    const menu = buildMenu([], { ...settings, bootTries: 0 }, { timeoutSeconds: 3, previousKernel });
    const cfg = renderGrubConfig(menu);
    expect(cfg).not.toMatch(/load_env|save_env|cairn-rollback|panic=/);
    expect(menu.entries.every((e) => e.counts === undefined)).toBe(true);
  });

  it('refuses boot tries outside 0 to 9', () => {
    expect(() => buildMenu([], { ...settings, bootTries: 10 }, { timeoutSeconds: 3 })).toThrow(/boot tries 10/);
    expect(() => buildMenu([], { ...settings, bootTries: 1.5 }, { timeoutSeconds: 3 })).toThrow(/boot tries 1.5/);
  });
});
