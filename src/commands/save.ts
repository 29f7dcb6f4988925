import { Command } from 'commander';
import { resolveContext, type GlobalOptions } from '../context.js';
import { UsageError } from '../lib/errors.js';
import { formatBytes, formatSeconds } from '../lib/format.js';
import { againWhileChanging } from '../save/again.js';
import { runSave, type SaveReport } from '../save/pipeline.js';
import { refreshMenu } from '../packages/target.js';
import { confirm, lineProgress, terminalProgress } from '../ui/progress.js';

interface SaveFlags {
  upper?: string;
  data?: string;
  bootRecord?: string;
  yes?: boolean;
  json?: boolean;
  wait?: string;
  full?: boolean;
  retries: string;
  progress: string;
}

export function saveCommand(global: () => GlobalOptions): Command {
  return new Command('save')
    .description('squash the changes of this session into upperfs.squashfs, verify it, and keep the previous state as the backup')
    .option('--upper <dir>', 'the upper layer to save (default: the running system\'s)')
    .option('--data <dir>', 'the data partition to save to (default: the running system\'s)')
    .option('--boot-record <file>', 'act as if this session booted as the given boot record says')
    .option('-y, --yes', 'save even though this session booted clean')
    .option('--full', 'write a whole state even when a checkpoint delta would do (a running system writes a delta while its chain is short)')
    .option('--wait <seconds>', 'how long to wait for another save to finish (default: lock_wait in the config)')
    .option('--retries <n>', 'when the save fails only because files changed while it ran, save again up to N more times (the shutdown save does)', '0')
    .option('--json', 'print the result as JSON')
    .option('--progress <how>', 'terminal (redrawn in place, only on a terminal), lines (a line per phase, for logs and consoles) or none', 'terminal')
    .action(async (flags: SaveFlags) => {
      if (!['terminal', 'lines', 'none'].includes(flags.progress)) throw new UsageError(`--progress "${flags.progress}" is not terminal, lines or none`);
      if (!/^[0-9]$/.test(flags.retries)) throw new UsageError(`--retries "${flags.retries}" is not a number from 0 to 9`);
      const ctx = await resolveContext(global(), flags, { upper: true });
      applyWait(ctx.config, flags.wait);
      const progress = flags.progress === 'lines' ? lineProgress() : terminalProgress(!flags.json && flags.progress === 'terminal');
      try {
        const attempt = () =>
          runSave({
            ...ctx,
            // Deltas only where the upper layer is the running session's: its ctimes are what a delta trusts.
            kind: ctx.booted && !flags.full ? 'auto' : 'full',
            confirmCleanSave: async (why) =>
              flags.yes === true || (await confirm(`${why[0]!.toUpperCase()}${why.slice(1)}. Save it as the newest state?`)),
            onPhase: (phase) => progress.phase(phase),
            onProgress: (phase, f) => progress.fraction(phase, f),
            onWaitForLock: (holder) => process.stderr.write(`waiting for another save to finish (${holder})\n`),
            onWarning: (line) => process.stderr.write(`warning: ${line}\n`),
          });
        const report = await againWhileChanging(attempt, Number(flags.retries), (e, next) => {
          const names = e.differences.slice(0, 3).map((d) => d.path).join(', ');
          const more = e.differences.length > 3 ? ', ...' : '';
          process.stderr.write(`files changed while the save ran (${names}${more}); the saved states are as they were; saving again (${next} of ${flags.retries})\n`);
        });
        progress.done();
        // The menu's marks and older-state entries follow the states; the
        // save itself is done and stays done whatever happens here.
        if (ctx.booted) {
          await refreshMenu(ctx.dataDir, 'new').catch((e: Error) => report.warnings.push(`the boot menu was not updated: ${e.message}`));
        }
        process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : summary(report));
      } finally {
        progress.done();
      }
    });
}

/** --wait SECONDS over the config's lock_wait. */
export function applyWait(config: { lockWait: number }, wait: string | undefined): void {
  if (wait === undefined) return;
  if (!/^[0-9]+$/.test(wait)) throw new UsageError(`--wait "${wait}" is not a number of seconds`);
  config.lockWait = Number(wait);
}

export function summary(r: SaveReport): string {
  const lines =
    r.kind === 'none'
      ? [`nothing changed since ${r.image} was saved: nothing written`]
      : r.kind === 'delta'
        ? [
            `saved a checkpoint of ${formatBytes(r.bytes)} (${r.files} entries changed) in ${formatSeconds(r.seconds)} to ${r.image}: ` +
              `a base and ${r.chainLinks! - 1} checkpoint${r.chainLinks === 2 ? '' : 's'}`,
          ]
        : [`saved ${formatBytes(r.bytes)} (${r.files} files, ${formatBytes(r.upperBytes)} before compression) in ${formatSeconds(r.seconds)} to ${r.image}`];
  if (r.bootedFrom) lines.push(`backup: the state this session came from (${r.bootedFrom})`);
  for (const k of r.kept) lines.push(`kept ${k.state} as ${k.as}`);
  for (const p of r.pruned) lines.push(`removed ${p} (more older states than configured)`);
  for (const h of r.held) lines.push(`held ${h.state}: ${h.reason}; no save removes it until you boot it or run cairn release`);
  if (r.linksRemoved.length) lines.push(`removed ${r.linksRemoved.length} checkpoint link${r.linksRemoved.length === 1 ? '' : 's'} no state uses any more`);
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  return `${lines.join('\n')}\n`;
}
