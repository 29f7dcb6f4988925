import { Command } from 'commander';
import { existsSync, openSync, readSync, closeSync, realpathSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { UsageError } from '../lib/errors.js';
import { resolveTarget, type TargetFlags } from '../packages/target.js';
import { DEFAULT_REAL_APK, SHIM_MARKER } from '../apk/shim.js';
import { runApkWrapper } from '../apk/wrapper.js';

/**
 * `cairn apk [CAIRN-OPTIONS --] APK-ARGS`: apk through the package wrapper.
 *
 * apk's arguments are taken from the raw command line, not from commander,
 * which would read cairn's own options (-V, --debug, --config) out of them
 * and drop a `--`. With a `--`, what comes before it is cairn's options
 * (which stick, how long to wait) and everything after is apk's, untouched;
 * the shim always calls `cairn apk -- "$@"`. Without one, all are apk's.
 *
 * The exit status is apk's (128 + n when a signal n killed it).
 */

interface ApkCairnFlags extends TargetFlags {
  lockWait?: number;
}

export function apkCommand(): Command {
  return new Command('apk')
    .description(
      "apk through cairn's package wrapper: kernels, firmware, GRUB and mkinitfs are repacked onto the stick, the rest passes through " +
        '(cairn apk [--data DIR --esp PATH --init-dir DIR --running-kernel REL --lock-wait S --] APK-ARGS; the real apk: $CAIRN_REAL_APK or /sbin/apk)',
    )
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .argument('[args...]')
    .action(async (_args: string[], _opts: unknown, cmd: Command) => {
      const { cairn, apk } = splitApkCommandLine(rawArgsOf(cmd));
      const flags = parseCairnFlags(cairn);
      const realApk = process.env.CAIRN_REAL_APK || DEFAULT_REAL_APK;
      refuseShim(realApk);
      const status = await runApkWrapper({
        argv: apk,
        realApk,
        target: () => resolveTarget(flags),
        lockWaitSeconds: flags.lockWait,
        cairnCommand: runningCairn(),
      });
      exitWith(status);
    });
}

/**
 * apk's status becomes cairn's. The entry point sets the exit code after a
 * command returns (0 for success), so the status is applied as the process
 * exits, after that.
 */
function exitWith(status: number): void {
  process.once('exit', () => {
    process.exitCode = status;
  });
}

/** The command line as given to parse (commander keeps it as `rawArgs`, untyped). */
function rawArgsOf(cmd: Command): readonly string[] {
  return (cmd.parent as unknown as { rawArgs?: string[] } | null)?.rawArgs ?? process.argv;
}

/** The arguments after the `apk` subcommand, split at the first `--` into cairn's and apk's. */
export function splitApkCommandLine(rawArgs: readonly string[]): { cairn: string[]; apk: string[] } {
  let i = 2;
  for (; i < rawArgs.length; i++) {
    const a = rawArgs[i]!;
    if (a === 'apk') break;
    if (a === '--config') i++;
  }
  const rest = rawArgs.slice(i + 1);
  const dashes = rest.indexOf('--');
  if (dashes < 0) return { cairn: [], apk: rest };
  return { cairn: rest.slice(0, dashes), apk: rest.slice(dashes + 1) };
}

const VALUE_FLAGS: Record<string, keyof ApkCairnFlags> = {
  '--data': 'data',
  '--esp': 'esp',
  '--init-dir': 'initDir',
  '--running-kernel': 'runningKernel',
  '--lock-wait': 'lockWait',
};

export function parseCairnFlags(words: readonly string[]): ApkCairnFlags {
  const flags: ApkCairnFlags = {};
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    if (w === '--debug') continue; // cairn's own, already applied
    if (w === '--config') {
      i++;
      continue;
    }
    const eq = w.indexOf('=');
    const name = eq > 0 ? w.slice(0, eq) : w;
    const key = VALUE_FLAGS[name];
    if (!key) {
      throw new UsageError(`cairn apk: "${w}" is not one of cairn's options (${Object.keys(VALUE_FLAGS).join(', ')})`, {
        hint: "apk's arguments go after a --: cairn apk -- add linux-lts",
      });
    }
    const value = eq > 0 ? w.slice(eq + 1) : words[++i];
    if (value === undefined) throw new UsageError(`cairn apk: ${name} needs a value`);
    if (key === 'lockWait') {
      if (!/^[0-9]+$/.test(value)) throw new UsageError(`cairn apk: --lock-wait "${value}" is not a number of seconds`);
      flags.lockWait = Number(value);
    } else {
      flags[key] = key === 'data' || key === 'esp' || key === 'initDir' ? resolve(value) : value;
    }
  }
  return flags;
}

/** The real apk must not be the shim, or apk would call cairn forever. */
function refuseShim(realApk: string): void {
  if (!existsSync(realApk)) return; // execApk reports it missing
  const fd = openSync(realpathSync(realApk), 'r');
  try {
    const head = Buffer.alloc(256);
    const n = readSync(fd, head, 0, head.length, 0);
    if (head.subarray(0, n).toString('latin1').includes(SHIM_MARKER)) {
      throw new UsageError(`${realApk} is cairn's apk shim, not apk-tools`, { hint: 'set CAIRN_REAL_APK to the real apk (/sbin/apk)' });
    }
  } finally {
    closeSync(fd);
  }
}

/** This cairn's own path, for the scripts it writes into packages. */
function runningCairn(): string {
  const script = process.argv[1];
  return script && /cairn/.test(basename(script)) && existsSync(script) ? realpathSync(script) : 'cairn';
}
