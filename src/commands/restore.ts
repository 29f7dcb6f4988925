import { Command } from 'commander';
import { release } from 'node:os';
import { resolveContext, type GlobalOptions } from '../context.js';
import { Esp } from '../esp/esp.js';
import { RefusedError } from '../lib/errors.js';
import { DATA } from '../names.js';
import { findEsp, refreshMenu } from '../packages/target.js';
import { restoreBackup } from '../state/restore.js';
import { confirmTyped } from '../ui/progress.js';

interface RestoreFlags {
  yes?: boolean;
  data?: string;
  esp?: string;
  bootRecord?: string;
}

export function restoreCommand(global: () => GlobalOptions): Command {
  return new Command('restore')
    .description(
      'put a backup made by `cairn backup` back on the stick: its state becomes the newest (the current one stays as the backup), ' +
        `its user folder replaces ${DATA.userDir}/, and the stick boots its kernel; the whole file is verified first`,
    )
    .argument('<file>', 'the backup file')
    .option('-y, --yes', 'do not ask (without a terminal, restore asks nothing and refuses unless --yes)')
    .option('--data <dir>', 'the data partition (default: the running system\'s)')
    .option('--esp <device>', 'the ESP whose kernels to restore (default: the running stick\'s; with --data, none unless given)')
    .option('--boot-record <file>', 'act as if this session booted as the given boot record says')
    .action(async (file: string, flags: RestoreFlags) => {
      const ctx = await resolveContext(global(), flags, { upper: false });
      const espDevice = flags.esp ?? (ctx.booted ? await findEsp() : undefined);
      const report = await restoreBackup({
        file,
        dataDir: ctx.dataDir,
        lock: { waitSeconds: ctx.config.lockWait, session: ctx.session },
        bootRecord: ctx.bootRecord,
        runDir: ctx.runDir,
        esp: espDevice ? new Esp(espDevice) : undefined,
        runningKernel: ctx.booted ? release() : undefined,
        confirm: async (m) => {
          const what = [
            m.states.length ? 'its state becomes the newest one' : undefined,
            m.user ? `its user folder replaces everything in ${ctx.dataDir}/${DATA.userDir}` : undefined,
          ].filter(Boolean);
          return (
            flags.yes === true ||
            (await confirmTyped(`${file} is a whole backup of ${m.created}. Restoring it: ${what.join('; ') || 'nothing to restore'}.`, 'RESTORE'))
          );
        },
      });
      if (!report.confirmed) {
        throw new RefusedError('nothing was changed: restore replaces the stick\'s state and user folder only once confirmed', {
          hint: 'run it on a terminal and type RESTORE when asked, or pass --yes',
        });
      }
      const warnings = [...report.warnings];
      if (ctx.booted) await refreshMenu(ctx.dataDir, report.state === 'installed' ? 'new' : undefined).catch((e: Error) => warnings.push(`the boot menu was not updated: ${e.message}`));
      const lines = [
        report.state === 'installed'
          ? `the backup's state is now the newest${report.backup ? `; ${report.backup} as it was is the backup` : ''}`
          : report.state === 'already-newest'
            ? 'the newest state already is the backup\'s: left as it is'
            : 'the backup holds no state: the states were left as they are',
        ...report.kept.map((k) => `kept ${k.state} as ${k.as}`),
        ...(report.kernel ? [`the stick boots kernel ${report.kernel}, the backup's`] : []),
        report.user ? `${ctx.dataDir}/${DATA.userDir} holds the backup's user folder` : `${ctx.dataDir}/${DATA.userDir} was left as it is`,
        ...(ctx.runDir ? ['reboot to use it: this session will not be saved at shutdown (`cairn save --yes` saves it after all, as a new state)'] : []),
        ...warnings.map((w) => `warning: ${w}`),
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    });
}
