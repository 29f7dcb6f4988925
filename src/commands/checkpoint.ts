import { Command } from 'commander';
import { resolveContext, type GlobalOptions } from '../context.js';
import { UsageError } from '../lib/errors.js';
import { refreshMenu } from '../packages/target.js';
import { runSave } from '../save/pipeline.js';
import { lineProgress, terminalProgress } from '../ui/progress.js';
import { applyWait, summary } from './save.js';

interface CheckpointFlags {
  upper?: string;
  data?: string;
  bootRecord?: string;
  wait?: string;
  json?: boolean;
  progress: string;
}

export function checkpointCommand(global: () => GlobalOptions): Command {
  return new Command('checkpoint')
    .description(
      'save what changed since the last save or checkpoint as a small delta chained to it (a whole state when the chain is long); ' +
        'nothing is written when nothing changed. The cairn-checkpoint service runs it every checkpoint_interval minutes',
    )
    .option('--upper <dir>', 'the upper layer (default: the running system\'s)')
    .option('--data <dir>', 'the data partition (default: the running system\'s)')
    .option('--boot-record <file>', 'act as if this session booted as the given boot record says')
    .option('--wait <seconds>', 'how long to wait for a save that runs (default: lock_wait in the config; 0 gives up at once, exit 75)')
    .option('--json', 'print the result as JSON')
    .option('--progress <how>', 'terminal, lines or none', 'terminal')
    .action(async (flags: CheckpointFlags) => {
      if (!['terminal', 'lines', 'none'].includes(flags.progress)) throw new UsageError(`--progress "${flags.progress}" is not terminal, lines or none`);
      const ctx = await resolveContext(global(), flags, { upper: true });
      if (!ctx.bootRecord) {
        throw new UsageError('a checkpoint extends the state this session booted from: it needs a boot record (run it on a booted cairn system, or pass --boot-record)');
      }
      applyWait(ctx.config, flags.wait);
      const progress = flags.progress === 'lines' ? lineProgress() : terminalProgress(!flags.json && flags.progress === 'terminal');
      try {
        const report = await runSave({
          ...ctx,
          kind: 'auto',
          checkpoint: true,
          confirmCleanSave: async () => false,
          onPhase: (phase) => progress.phase(phase),
          onProgress: (phase, f) => progress.fraction(phase, f),
          onWaitForLock: (holder) => process.stderr.write(`waiting for a save to finish (${holder})\n`),
          onWarning: (line) => process.stderr.write(`warning: ${line}\n`),
        });
        progress.done();
        if (ctx.booted && report.kind !== 'none') {
          await refreshMenu(ctx.dataDir, 'new').catch((e: Error) => report.warnings.push(`the boot menu was not updated: ${e.message}`));
        }
        process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : summary(report));
      } finally {
        progress.done();
      }
    });
}
