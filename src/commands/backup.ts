import { Command } from 'commander';
import { resolveContext, type GlobalOptions } from '../context.js';
import { Esp } from '../esp/esp.js';
import { formatBytes } from '../lib/format.js';
import { findEsp } from '../packages/target.js';
import { writeBackup } from '../state/backup.js';

interface BackupFlags {
  force?: boolean;
  data?: string;
  esp?: string;
}

export function backupCommand(global: () => GlobalOptions): Command {
  return new Command('backup')
    .description(
      'write the stick\'s changes into one file: the newest state, the user folder and the kernel the stick boots ' +
        '(not the base system); read back and verified before it takes the name FILE',
    )
    .argument('<file>', 'the backup file to write, on another disk than the stick')
    .option('--force', 'replace FILE if it exists')
    .option('--data <dir>', 'the data partition (default: the running system\'s)')
    .option('--esp <device>', 'the ESP to read the kernels\' state from (default: the running stick\'s; with --data, none unless given)')
    .action(async (file: string, flags: BackupFlags) => {
      const ctx = await resolveContext(global(), flags, { upper: false });
      const espDevice = flags.esp ?? (ctx.booted ? await findEsp() : undefined);
      const report = await writeBackup({
        file,
        dataDir: ctx.dataDir,
        lock: { waitSeconds: ctx.config.lockWait, session: ctx.session },
        force: flags.force === true,
        esp: espDevice ? new Esp(espDevice) : undefined,
        config: ctx.config,
      });
      const lines = [
        `wrote ${report.file} (${formatBytes(report.bytes)}), read back and verified; only root can read it`,
        report.state ? `state: ${report.state}` : 'state: none (the stick has no saved state)',
        report.user ? 'user folder: included' : 'user folder: none on the stick',
        report.kernel ? `kernel: ${report.kernel}` : 'kernel: not included',
        ...report.warnings.map((w) => `warning: ${w}`),
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    });
}
