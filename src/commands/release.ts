import { Command } from 'commander';
import { resolveContext, type GlobalOptions } from '../context.js';
import { UsageError } from '../lib/errors.js';
import { withSaveLock } from '../save/lock.js';
import { releaseHeld } from '../state/held.js';

export function releaseCommand(global: () => GlobalOptions): Command {
  return new Command('release')
    .description('let saves prune held states again: states a boot fell back past, which no save removes until you act')
    .argument('[states...]', 'held states by boot name (gen-3, default, backup) or file name; see cairn status')
    .option('--all', 'release every held state')
    .option('--data <dir>', 'the data partition (default: the running system\'s)')
    .action(async (states: string[], flags: { all?: boolean; data?: string }) => {
      if (flags.all && states.length) throw new UsageError('give state names or --all, not both');
      if (!flags.all && !states.length) throw new UsageError('name the held states to release (see cairn status), or give --all');
      const ctx = await resolveContext(global(), flags, { upper: false });
      // Under the save lock: a save reads and writes the same list.
      const released = await withSaveLock(ctx.dataDir, { waitSeconds: ctx.config.lockWait, session: ctx.session }, () =>
        releaseHeld(ctx.dataDir, flags.all ? { all: true } : { names: states }),
      );
      process.stdout.write(
        released.length
          ? `released ${released.join(', ')}: saves prune ${released.length === 1 ? 'it' : 'them'} as usual from now on\n`
          : 'no state is held\n',
      );
    });
}
