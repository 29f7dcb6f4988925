import { Command } from 'commander';
import { resolveContext, type GlobalOptions } from '../context.js';
import { RefusedError } from '../lib/errors.js';
import { DATA } from '../names.js';
import { refreshMenu } from '../packages/target.js';
import { resetStick } from '../state/reset.js';
import { listStates } from '../state/states.js';
import { confirmTyped } from '../ui/progress.js';

export function resetCommand(global: () => GlobalOptions): Command {
  return new Command('reset')
    .description(`back to the stick as built: remove every saved state (the newest, the backup and older ones); ${DATA.userDir}/ on the data partition is kept unless --all`)
    .option('--all', `also empty ${DATA.userDir}/ on the data partition`)
    .option('-y, --yes', 'do not ask (without a terminal, reset asks nothing and refuses unless --yes)')
    .option('--data <dir>', 'the data partition (default: the running system\'s)')
    .option('--boot-record <file>', 'act as if this session booted as the given boot record says')
    .action(async (flags: { all?: boolean; yes?: boolean; data?: string; bootRecord?: string }) => {
      const ctx = await resolveContext(global(), flags, { upper: false });
      const states = await listStates(ctx.dataDir);
      const what = `${states.length} saved state${states.length === 1 ? '' : 's'}${flags.all ? ` and everything in ${ctx.dataDir}/${DATA.userDir}` : ''}`;
      if (!flags.yes && !(await confirmTyped(`This removes ${what} from ${ctx.dataDir}; it cannot be undone.`, 'RESET'))) {
        throw new RefusedError(`nothing was removed: reset removes ${what} only once confirmed`, {
          hint: 'run it on a terminal and type RESET when asked, or pass --yes',
        });
      }
      const report = await resetStick({
        dataDir: ctx.dataDir,
        lock: { waitSeconds: ctx.config.lockWait, session: ctx.session },
        all: flags.all === true,
        runDir: ctx.runDir,
      });
      // The menu's older-state entries follow the states.
      const warnings: string[] = [];
      if (ctx.booted) await refreshMenu(ctx.dataDir, 'gone').catch((e: Error) => warnings.push(`the boot menu was not updated: ${e.message}`));
      const lines = [
        report.removed.length ? `removed ${report.removed.join(', ')}` : 'no saved state was there',
        report.userEmptied ? `emptied ${ctx.dataDir}/${DATA.userDir}` : `kept ${ctx.dataDir}/${DATA.userDir}`,
        ...report.leftAlone.map((l) => `left alone ${l.name}: ${l.why}`),
        ...(ctx.runDir ? ['this session will not be saved at shutdown: reboot to start from the stick as built (`cairn save --yes` saves it after all)'] : []),
        ...warnings.map((w) => `warning: ${w}`),
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    });
}
