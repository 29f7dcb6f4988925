import { Command } from 'commander';
import { stopRunning } from './lib/run.js';
import { grubCommand } from './commands/grub.js';
import { imageCommand } from './commands/image.js';
import { vmCommand } from './commands/vm.js';
import { saveCommand } from './commands/save.js';
import { checkpointCommand } from './commands/checkpoint.js';
import { statusCommand } from './commands/status.js';
import { diffCommand } from './commands/diff.js';
import { releaseCommand } from './commands/release.js';
import { resetCommand } from './commands/reset.js';
import { backupCommand } from './commands/backup.js';
import { restoreCommand } from './commands/restore.js';
import { verifyCommand } from './commands/verify.js';
import { initramfsCommand } from './commands/initramfs.js';
import { kernelCommand } from './commands/kernel.js';
import { bootCommand } from './commands/boot.js';
import { debHookCommand } from './commands/debHook.js';
import { apkCommand } from './commands/apk.js';
import { CairnError } from './lib/errors.js';
import { log, setLogLevel } from './lib/log.js';

const VERSION = '0.1.0';

export function buildProgram(): Command {
  const program = new Command('cairn')
    .description('cairn: a RAM-resident Linux system whose changes are saved to the stick it boots from')
    .version(VERSION)
    .option('--config <file>', 'read settings from this file instead of /etc/cairn/cairn.conf')
    .option('--debug', 'log every step and command to stderr')
    .showHelpAfterError()
    .hook('preAction', (cmd) => {
      if (cmd.opts<{ debug?: boolean }>().debug) setLogLevel('debug');
    });
  const global = () => program.opts<{ config?: string }>();
  program.addCommand(saveCommand(global));
  program.addCommand(checkpointCommand(global));
  program.addCommand(statusCommand(global));
  program.addCommand(diffCommand(global));
  program.addCommand(releaseCommand(global));
  program.addCommand(resetCommand(global));
  program.addCommand(backupCommand(global));
  program.addCommand(restoreCommand(global));
  program.addCommand(verifyCommand());
  program.addCommand(initramfsCommand());
  program.addCommand(grubCommand(global));
  program.addCommand(imageCommand());
  program.addCommand(vmCommand());
  program.addCommand(kernelCommand());
  program.addCommand(bootCommand());
  program.addCommand(debHookCommand());
  program.addCommand(apkCommand());
  return program;
}

/** The only place that turns errors into messages and exit statuses. */
export function handleError(e: unknown): number {
  if (e instanceof CairnError) {
    process.stderr.write(`cairn: ${e.message}\n`);
    if (e.hint) process.stderr.write(`hint: ${e.hint}\n`);
    log.debug({ err: e }, 'failed');
    return e.exitCode;
  }
  process.stderr.write(`cairn: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
  return 70; // EX_SOFTWARE
}

export async function main(argv: string[]): Promise<number> {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    // on, not once: execa's exit handler re-raises a signal nobody else listens to.
    process.on(signal, () => {
      stopRunning(signal);
      // Clean-up that hangs must not keep a shutdown waiting.
      setTimeout(() => process.exit(128 + (signal === 'SIGINT' ? 2 : 15)), 30_000).unref();
    });
  }
  try {
    await buildProgram().parseAsync(argv);
    return 0;
  } catch (e) {
    return handleError(e);
  }
}
