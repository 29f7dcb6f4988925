import { Command } from 'commander';
import { readBootRecord } from '../bootRecord.js';
import { markBootGood, retryBoot } from '../boot/counting.js';
import type { Tries } from '../boot/tries.js';
import { RUNTIME } from '../names.js';
import { confirmKernel } from '../packages/kernel.js';
import { resolveTarget, type TargetFlags } from '../packages/target.js';
import { withTargetOptions } from './target.js';

type BootFlags = TargetFlags & { bootRecord?: string; json?: boolean };

export function bootCommand(): Command {
  const good = withTargetOptions(
    new Command('good')
      .description(
        'run at boot once the system is up (the cairn-boot-good service): confirms the kernel that runs and the newest state this boot unpacked, ' +
          'so GRUB stops counting their tries; the previous kernel\'s files go once the new one is confirmed',
      )
      .option('--boot-record <file>', `how this session booted (default: ${RUNTIME.bootRecord})`)
      .option('--json', 'print the result as JSON'),
  ).action(async (flags: BootFlags) => {
    const t = await resolveTarget(flags);
    const record = await readBootRecord(flags.bootRecord ?? RUNTIME.bootRecord);
    const report = await markBootGood(t.esp, record, t.runningKernel ?? '');
    // Only a kernel that booted and came up is let go of its fallback.
    const kernels = await confirmKernel(t);
    if (flags.json) {
      process.stdout.write(`${JSON.stringify({ ...report, kernels }, null, 2)}\n`);
      return;
    }
    const lines = [
      report.confirmed.length ? `boot marked good: ${report.confirmed.join(' and ')} confirmed` : 'boot marked good: nothing was on trial',
      ...rolledBack(report.after),
      ...(kernels.dropped ? [`kernel ${kernels.dropped} removed: the new default kernel has come up`] : []),
      ...kernels.orphans.map((o) => `removed files of kernel ${o}, which no menu entry boots`),
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  });

  const retry = withTargetOptions(
    new Command('retry')
      .description('after a rollback: give the default kernel and the newest state their tries again, so the next boot tries them')
      .option('--json', 'print the result as JSON'),
  ).action(async (flags: BootFlags) => {
    const report = await retryBoot((await resolveTarget(flags)).esp);
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      return;
    }
    const again = (['kernel', 'state'] as const).filter((s) => report.before[s] === 0);
    process.stdout.write(
      again.length
        ? `the next boot tries ${again.map((s) => (s === 'kernel' ? 'the default kernel' : 'the newest state')).join(' and ')} again (${report.after[again[0]!]} tries)\n`
        : 'nothing was rolled back: the next boot is as it would have been\n',
    );
  });

  return new Command('boot').description('boot counting: what GRUB tries, and what it falls back to').addCommand(good).addCommand(retry);
}

function rolledBack(t: Tries): string[] {
  return [
    ...(t.kernel === 0 ? ['the default kernel stays rolled back: GRUB boots the previous one (cairn boot retry tries it again)'] : []),
    ...(t.state === 0 ? ['the newest state stays rolled back: GRUB boots the backup (cairn boot retry tries it again)'] : []),
  ];
}
