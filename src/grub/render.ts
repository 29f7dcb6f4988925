import template from '../../grub/grub.cfg.in?raw';
import type { Menu, MenuEntry } from './menu.js';
import { grubQuote, grubWord } from './quote.js';

/** The template every grub.cfg is made from (grub/grub.cfg.in), built into cairn. */
export const GRUB_TEMPLATE: string = template;

/** Turns the menu into grub.cfg text. Every value is quoted for GRUB script. */
export function renderGrubConfig(menu: Menu, tpl: string = GRUB_TEMPLATE): string {
  return fillTemplate(tpl, {
    SERIAL_SPEED: grubWord(String(menu.serialSpeed)),
    TIMEOUT: grubWord(String(menu.timeoutSeconds)),
    DEFAULT: grubWord(menu.defaultId),
    ENTRIES: menu.entries.map((e) => renderEntry(menu, e)).join('\n\n'),
  });
}

function renderEntry(menu: Menu, e: MenuEntry): string {
  const find = menu.esp.by === 'label' ? '--label' : '--fs-uuid';
  return [
    // $menuentry_id_option is left unquoted: empty on a GRUB without --id.
    `menuentry ${grubQuote(e.title)} $menuentry_id_option ${grubWord(e.id)} {`,
    `\tsearch --no-floppy --set=root ${find} ${grubWord(menu.esp.value)}`,
    `\techo ${grubQuote(`Loading the kernel and the initramfs for cairn.boot=${e.boot} ...`)}`,
    `\tlinux ${[e.kernel ?? menu.kernel, ...e.args].map(grubWord).join(' ')}`,
    `\tinitrd ${grubWord(e.initrd ?? menu.initrd)}`,
    '}',
  ].join('\n');
}

/**
 * Replaces each @NAME@ in one pass (a value holding "@X@" is not read again).
 * A placeholder without a value, or a value without a placeholder, is a bug
 * in the template or here, and fails.
 */
export function fillTemplate(tpl: string, values: Record<string, string>): string {
  const used = new Set<string>();
  const out = tpl.replace(/@([A-Z_]+)@/g, (_, name: string) => {
    const v = values[name];
    if (v === undefined) throw new Error(`the GRUB template has an unknown placeholder @${name}@`);
    used.add(name);
    return v;
  });
  const unused = Object.keys(values).filter((k) => !used.has(k));
  if (unused.length) throw new Error(`the GRUB template lacks ${unused.map((k) => `@${k}@`).join(', ')}`);
  return out;
}
