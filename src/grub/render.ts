import template from '../../grub/grub.cfg.in?raw';
import { MAX_BOOT_TRIES, TRY_VARS, type TrialSubject } from '../boot/tries.js';
import { ESP_PATHS } from '../names.js';
import { PREVIOUS_KERNEL_ID, ROLLBACK_ID, entryId, type Menu, type MenuEntry, type RollbackEntry } from './menu.js';
import { grubQuote, grubWord } from './quote.js';

/** The template every grub.cfg is made from (grub/grub.cfg.in), built into cairn. */
export const GRUB_TEMPLATE: string = template;

/** Turns the menu into grub.cfg text. Every value is quoted for GRUB script. */
export function renderGrubConfig(menu: Menu, tpl: string = GRUB_TEMPLATE): string {
  return fillTemplate(tpl, {
    SERIAL_SPEED: grubWord(String(menu.serialSpeed)),
    TIMEOUT: grubWord(String(menu.timeoutSeconds)),
    DEFAULT: grubWord(menu.defaultId),
    COUNTING: renderCounting(menu),
    ENTRIES: [...menu.entries.map((e) => renderEntry(menu, e)), ...(menu.rollback ? [renderRollback(menu, menu.rollback)] : [])].join('\n\n'),
  });
}

const ENV = `/${ESP_PATHS.grubEnv}`;
const VARS = Object.values(TRY_VARS).join(' ');

function searchEsp(menu: Menu): string {
  return `search --no-floppy --set=root ${menu.esp.by === 'label' ? '--label' : '--fs-uuid'} ${grubWord(menu.esp.value)}`;
}

/**
 * Before the menu shows: the counters from the environment block, and the
 * default moved to what the counters say once something has used its tries.
 * Only the default entry is moved: an entry the user chose at build time
 * (--default) is theirs.
 */
function renderCounting(menu: Menu): string {
  // The messages fit an 80-column serial console: a wrapped line is two to whoever reads the log.
  if (!menu.bootTries) return '# Boot counting is off (boot tries 0).';
  const hasPrevious = menu.entries.some((e) => e.id === PREVIOUS_KERNEL_ID);
  const lines = [
    '# Boot counting (docs/boot.md): a new kernel or a new newest state has a',
    '# few tries, counted in the environment block; cairn clears the count',
    '# once a boot of it is good.',
    `set ${TRY_VARS.kernel}=`,
    `set ${TRY_VARS.state}=`,
    `if ${searchEsp(menu)}; then`,
    `  if [ -f ${ENV} ]; then`,
    `    load_env --file ${ENV} ${VARS}`,
    '  fi',
    'fi',
    `if [ "\${default}" = ${grubWord(entryId('default'))} ]; then`,
  ];
  if (hasPrevious) {
    lines.push(
      `  if [ "\${${TRY_VARS.kernel}}" = 0 ]; then`,
      `    echo ${grubQuote('cairn: the default kernel did not come up: booting the previous kernel')}`,
      `    set default=${grubWord(PREVIOUS_KERNEL_ID)}`,
      '  fi',
    );
  }
  lines.push(
    `  if [ "\${${TRY_VARS.state}}" = 0 ]; then`,
    `    echo ${grubQuote('cairn: the newest state did not come up in its tries: booting the backup')}`,
    `    set default=${grubWord(ROLLBACK_ID)}`,
    '  fi',
    'fi',
  );
  return lines.join('\n');
}

/**
 * Takes a try off the first of SUBJECTS that is on trial and writes the
 * count back before the kernel loads, so that a boot that never comes back
 * (a panic, a hang, a power cut) has used it. GRUB has no arithmetic: the
 * countdown is spelled out; a value it does not know counts as the most.
 */
function renderCountdown(subjects: readonly TrialSubject[]): string[] {
  const out = [`\tif [ -f ${ENV} ]; then`, `\t\tload_env --file ${ENV} ${VARS}`];
  subjects.forEach((subject, i) => {
    const v = TRY_VARS[subject];
    out.push(`\t\t${i === 0 ? 'if' : 'elif'} [ -n "\${${v}}" ]; then`, `\t\t\tif [ "\${${v}}" != 0 ]; then`);
    for (let n = 1; n <= MAX_BOOT_TRIES; n++) out.push(`\t\t\t\t${n === 1 ? 'if' : 'elif'} [ "\${${v}}" = ${n} ]; then set ${v}=${n - 1}`);
    out.push(
      `\t\t\t\telse set ${v}=${MAX_BOOT_TRIES - 1}`,
      '\t\t\t\tfi',
      `\t\t\t\tsave_env --file ${ENV} ${v}`,
      `\t\t\t\techo ${grubQuote(`cairn: ${subject === 'kernel' ? 'the default kernel' : 'the newest state'} is on trial, tries left:`)} "\${${v}}"`,
      '\t\t\tfi',
    );
  });
  out.push('\t\tfi', '\tfi');
  return out;
}

function renderEntry(menu: Menu, e: MenuEntry): string {
  return [
    // $menuentry_id_option is left unquoted: empty on a GRUB without --id.
    `menuentry ${grubQuote(e.title)} $menuentry_id_option ${grubWord(e.id)} {`,
    `\t${searchEsp(menu)}`,
    ...(e.counts?.length ? renderCountdown(e.counts) : []),
    ...loadLines(e, e.kernel ?? menu.kernel, e.initrd ?? menu.initrd),
    '}',
  ].join('\n');
}

function loadLines(e: MenuEntry, kernel: string, initrd: string, indent = '\t'): string[] {
  return [
    `${indent}echo ${grubQuote(`Loading the kernel and the initramfs for cairn.boot=${e.boot} ...`)}`,
    `${indent}linux ${[kernel, ...e.args].map(grubWord).join(' ')}`,
    `${indent}initrd ${grubWord(initrd)}`,
  ];
}

/**
 * Defined only while the newest state has used its tries, so the menu shows
 * it only then; it boots the previous kernel while the default kernel is
 * rolled back too.
 */
function renderRollback(menu: Menu, e: RollbackEntry): string {
  const load = e.previousKernel
    ? [
        `\t\tif [ "\${${TRY_VARS.kernel}}" = 0 ]; then`,
        ...loadLines(e, e.previousKernel.kernel, e.previousKernel.initrd, '\t\t\t'),
        '\t\telse',
        ...loadLines(e, menu.kernel, menu.initrd, '\t\t\t'),
        '\t\tfi',
      ]
    : loadLines(e, menu.kernel, menu.initrd, '\t\t');
  return [
    `if [ "\${${TRY_VARS.state}}" = 0 ]; then`,
    `\tmenuentry ${grubQuote(e.title)} $menuentry_id_option ${grubWord(e.id)} {`,
    `\t\t${searchEsp(menu)}`,
    `\t\tif [ -f ${ENV} ]; then load_env --file ${ENV} ${VARS}; fi`,
    ...load,
    '\t}',
    'fi',
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
