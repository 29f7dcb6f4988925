import { Command } from 'commander';
import { resolveContext, type GlobalOptions } from '../context.js';
import { formatBytes, formatDate } from '../lib/format.js';
import { gatherStatus, type Status } from '../status.js';

interface StatusFlags {
  upper?: string;
  data?: string;
  bootRecord?: string;
  quick?: boolean;
  json?: boolean;
}

export function statusCommand(global: () => GlobalOptions): Command {
  return new Command('status')
    .description('how this session booted, the upper layer\'s use, and the saved states with their integrity')
    .option('--upper <dir>', 'the upper layer (default: the running system\'s)')
    .option('--data <dir>', 'the data partition (default: the running system\'s)')
    .option('--boot-record <file>', 'read this boot record instead of the running system\'s')
    .option('--quick', 'read only the seals, not whole images (a flipped byte goes unseen)')
    .option('--json', 'print the status as JSON')
    .action(async (flags: StatusFlags) => {
      const ctx = await resolveContext(global(), flags, { upper: false });
      const status = await gatherStatus(ctx, { full: !flags.quick });
      process.stdout.write(flags.json ? `${JSON.stringify(status, null, 2)}\n` : render(status));
    });
}

function render(s: Status): string {
  const out: string[] = [];
  const r = s.bootRecord;
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
  if (s.upper) out.push(`upper use: ${formatBytes(s.upper.usedBytes)} of ${formatBytes(s.upper.totalBytes)} (${s.upper.dir})`);
  out.push(`saved states on ${s.dataDir}:`);
  if (!s.states.length) out.push('  none yet');
  for (const st of s.states) {
    const health = st.intact ? 'intact' : `DAMAGED: ${st.problem}`;
    out.push(`  ${st.boot.padEnd(8)} ${st.name.padEnd(28)} ${formatBytes(st.bytes).padStart(10)}  ${formatDate(st.created ?? 0)}  ${health}`);
  }
  out.push(`next default boot: ${s.nextDefaultBoot}`);
  return `${out.join('\n')}\n`;
}
