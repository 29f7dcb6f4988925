import { existsSync } from 'node:fs';
import { Command } from 'commander';
import { gatherUnsaved, unsavedSummary, type Unsaved } from '../changes/unsaved.js';
import { resolveContext, type GlobalOptions } from '../context.js';
import { RUNTIME } from '../names.js';

interface DiffFlags {
  upper?: string;
  data?: string;
  bootRecord?: string;
  lower?: string;
  json?: boolean;
}

export function diffCommand(global: () => GlobalOptions): Command {
  return new Command('diff')
    .description(
      'list what is unsaved: the paths added (A), changed (M) and removed (D) in the upper layer since the last save, ' +
        'or since the boot when this session has not saved (like lbu diff)',
    )
    .option('--upper <dir>', 'the upper layer (default: the running system\'s)')
    .option('--data <dir>', 'the data partition holding the states (default: the running system\'s)')
    .option('--boot-record <file>', 'act as if this session booted as the given boot record says (its directory holds the last save\'s mark)')
    .option('--lower <dir>', 'the base system, to tell base files changed (M) from new ones (A) (default: the running system\'s)')
    .option('--json', 'print the changes as JSON')
    .addHelpText(
      'after',
      '\nContents are read only for files changed since the last save or the boot (by their ctime): a file changed and\n' +
        'changed back is listed as M when its modification time differs, and not listed when that was restored too.\n' +
        'Paths the save leaves out (exclude= in cairn.conf) are never listed.',
    )
    .action(async (flags: DiffFlags) => {
      const ctx = await resolveContext(global(), flags, { upper: true });
      const lower = flags.lower ?? (ctx.booted && existsSync(RUNTIME.lowerDir) ? RUNTIME.lowerDir : undefined);
      const unsaved = await gatherUnsaved(ctx, lower);
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(asJson(unsaved), null, 2)}\n`);
      } else {
        // The list is for scripts, as lbu's is; the count goes where a pipe does not take it.
        process.stdout.write(render(unsaved));
        process.stderr.write(`${unsavedSummary(unsaved)}\n`);
      }
    });
}

function asJson(u: Unsaved) {
  return {
    since: u.baseline.label,
    baselineState: u.baselineImage ?? null,
    added: u.added,
    changed: u.changed,
    removed: u.removed,
    bytes: u.bytes,
    contentsRead: u.contentsRead,
    ...(u.baseline.note ? { note: u.baseline.note } : {}),
    changes: u.changes.map((c) => ({ kind: c.kind, path: c.path, what: c.what })),
  };
}

function render(u: Unsaved): string {
  const lines = u.changes.map((c) => `${c.kind} ${c.path}`);
  if (u.baseline.note) lines.push(`note: ${u.baseline.note}`);
  return lines.length ? `${lines.join('\n')}\n` : '';
}
