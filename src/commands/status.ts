import { existsSync } from 'node:fs';
import { Command } from 'commander';
import { RUNTIME } from '../names.js';
import { resolveContext, type GlobalOptions } from '../context.js';
import { formatBytes, formatDate } from '../lib/format.js';
import { gatherStatus, type KernelStatus, type Status } from '../status.js';
import { describeTries } from '../boot/tries.js';
import { Esp } from '../esp/esp.js';
import { findEsp } from '../packages/target.js';

interface StatusFlags {
  upper?: string;
  data?: string;
  bootRecord?: string;
  quick?: boolean;
  esp?: string;
  json?: boolean;
}

export function statusCommand(global: () => GlobalOptions): Command {
  return new Command('status')
    .description('how this session booted, the upper layer\'s use, and the saved states with their integrity')
    .option('--upper <dir>', 'the upper layer (default: the running system\'s)')
    .option('--data <dir>', 'the data partition (default: the running system\'s)')
    .option('--boot-record <file>', 'read this boot record instead of the running system\'s')
    .option('--esp <path>', 'the ESP whose kernels to show: a block device or a FAT image (default: the running system\'s, found by label)')
    .option('--quick', 'read only the seals, not whole images (a flipped byte goes unseen), and do not count what is unsaved')
    .option('--json', 'print the status as JSON')
    .action(async (flags: StatusFlags) => {
      const ctx = await resolveContext(global(), flags, { upper: false });
      const espPath = flags.esp ?? (ctx.booted ? await findEsp().catch(() => undefined) : undefined);
      // Counting what is unsaved walks the upper layer and the baseline state: only for a session, and not with --quick.
      const lowerDir = ctx.booted && existsSync(RUNTIME.lowerDir) ? RUNTIME.lowerDir : undefined;
      const unsaved = !flags.quick && ctx.runDir ? { lowerDir } : undefined;
      const status = await gatherStatus(ctx, { full: !flags.quick, esp: espPath ? new Esp(espPath) : undefined, unsaved });
      process.stdout.write(flags.json ? `${JSON.stringify(status, null, 2)}\n` : render(status));
    });
}

function countingLines(k: KernelStatus): string[] {
  const c = k.counting;
  if (!c) return [];
  if (c.problem) return [`boot counting: unknown (${c.problem})`];
  if (!c.tries) return ['boot counting: off (boot tries 0)'];
  return [
    `boot counting: ${c.tries} tries for a new kernel or newest state`,
    `  ${describeTries('kernel', c.left.kernel, c.tries)}`,
    `  ${describeTries('state', c.left.state, c.tries)}`,
  ];
}

function render(s: Status): string {
  const out: string[] = [];
  if (s.lastSaveFailed) out.push(`LAST SAVE FAILED: ${s.lastSaveFailed} (cairn save saves this session now)`);
  const r = s.bootRecord;
  if (r?.dataCheck.startsWith('errors left')) {
    out.push(`DATA PARTITION NEEDS REPAIR: ${r.dataCheck}; nothing is saved this session (boot with cairn.debug=1 and run e2fsck -f on it from the rescue shell)`);
  } else if (r?.dataCheck && r.dataCheck !== 'clean') {
    out.push(`data partition at boot: ${r.dataCheck}`);
  }
  if (r?.grow && !r.grow.startsWith('off')) out.push(`data partition grown at boot: ${r.grow}`);
  if (r && r.used === 'clean' && r.requested !== 'clean' && !s.states.length) {
    // A new stick: the default boot had nothing to load yet.
    out.push(`booted: ${r.requested}, nothing saved yet`);
    out.push(`upper layer: ${r.upper || 'unknown'}${r.kernel ? `, kernel ${r.kernel}` : ''}`);
  } else if (r) {
    out.push(`booted: ${r.used}${r.requested !== r.used ? ` (asked for ${r.requested})` : ''}`);
    if (r.fallback) out.push(`fallback: ${r.fallback}`);
    out.push(`upper layer: ${r.upper || 'unknown'}${r.kernel ? `, kernel ${r.kernel}` : ''}`);
  } else {
    out.push('booted: not a booted cairn system (no boot record)');
  }
  if (s.unsaved) out.push('problem' in s.unsaved ? `changed since the last save: unknown (${s.unsaved.problem})` : `${s.unsaved.line} (cairn diff lists them)`);
  if (s.upper) out.push(`upper use: ${formatBytes(s.upper.usedBytes)} of ${formatBytes(s.upper.totalBytes)} (${s.upper.dir})`);
  out.push(`saved states on ${s.dataDir}:`);
  if (!s.states.length) out.push('  none yet');
  for (const st of s.states) {
    const health = st.intact ? 'intact' : `DAMAGED: ${st.problem}`;
    out.push(`  ${st.boot.padEnd(8)} ${st.name.padEnd(28)} ${formatBytes(st.bytes).padStart(10)}  ${formatDate(st.created ?? 0)}  ${health}`);
    if (st.checkpoints !== undefined) {
      const links = st.checkpoints + 1;
      const missing = links - (st.linksPresent ?? links);
      out.push(
        `           a base and ${st.checkpoints} checkpoint${st.checkpoints === 1 ? '' : 's'}, the newest saved ${formatDate(st.created ?? 0)}` +
          (missing ? `; ${missing} link${missing === 1 ? ' is' : 's are'} missing: a boot uses the ${links - missing} before` : ''),
      );
    }
  }
  const held = s.states.filter((st) => st.held !== undefined);
  if (held.length) {
    out.push(`HELD: ${held.length === 1 ? 'this state was' : 'these states were'} not booted when asked for; no save removes ${held.length === 1 ? 'it' : 'them'} until you act:`);
    for (const st of held) out.push(`  ${st.boot.padEnd(8)} ${st.held}`);
    out.push('  boot one from the GRUB menu to see it, or run `cairn release <name>` (or --all) to let saves prune it as usual');
  }
  const k = s.kernels;
  const rolledBack = k?.counting?.left.state === 0;
  out.push(`next default boot: ${rolledBack ? 'backup (GRUB rolls back: the newest state used its tries)' : s.nextDefaultBoot}`);
  if (k) {
    if (k.problem) out.push(`kernels: unknown (${k.problem})`);
    else {
      out.push(`kernel booted by default: ${k.default}${k.previous ? ` (the menu keeps ${k.previous} until it is confirmed)` : ''}`);
      out.push(...countingLines(k));
      out.push(`kernels on the ESP: ${k.onEsp.join(', ') || 'none'}`);
      if (k.grub) out.push(`GRUB boot files: ${Object.entries(k.grub).map(([p, v]) => `${p} ${v}`).join(', ') || 'versions unrecorded'}`);
    }
    out.push(`modules images: ${k.modulesImages.join(', ') || 'none'}`);
  }
  return `${out.join('\n')}\n`;
}
