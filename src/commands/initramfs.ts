import { Command } from 'commander';
import { UsageError } from '../lib/errors.js';
import { formatBytes, formatSeconds } from '../lib/format.js';
import { buildInitramfs, type InitramfsReport } from '../initramfs/build.js';

interface BuildFlags {
  kver: string;
  modulesDir: string;
  output: string;
  luks?: boolean;
  busybox?: string;
  initDir?: string;
  module?: string[];
  json?: boolean;
}

export function initramfsCommand(): Command {
  const build = new Command('build')
    .description('build the initramfs: busybox, unsquashfs, the early-boot module and the kernel modules the boot needs, as a gzipped cpio')
    .requiredOption('--kver <version>', 'the kernel version the initramfs is for (its modules: lib/modules/<version>)')
    .requiredOption('--modules-dir <dir>', 'the directory holding lib/modules/<version> (/ for this machine, or an unpacked kernel package)')
    .requiredOption('--output <file>', 'where to write the initramfs (replaced atomically)')
    .option('--luks', 'carry cryptsetup and dm-crypt, for an encrypted data partition')
    .option('--busybox <path>', 'the busybox to carry (default: busybox on PATH; a static one needs no libraries)')
    .option('--init-dir <dir>', "the early-boot module: a directory with init and lib/*.sh (default: cairn's own)")
    .option('--module <name>', 'one more kernel module the boot needs, with its dependencies (repeatable)', collect)
    .option('--json', 'print the result as JSON')
    .action(async (flags: BuildFlags) => {
      if (!/^[A-Za-z0-9._+~-]+$/.test(flags.kver)) throw new UsageError(`--kver "${flags.kver}" is not a kernel version`);
      const report = await buildInitramfs({
        kernelVersion: flags.kver,
        modulesDir: flags.modulesDir,
        output: flags.output,
        luks: flags.luks === true,
        busybox: flags.busybox,
        initDir: flags.initDir,
        extraModules: flags.module ?? [],
      });
      process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : summary(report));
    });
  return new Command('initramfs').description('build the initramfs that boots a cairn stick').addCommand(build);
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

function summary(r: InitramfsReport): string {
  return [
    `wrote ${r.output}: ${formatBytes(r.bytes)} (${formatBytes(r.cpioBytes)} unpacked, ${r.entries} entries) in ${formatSeconds(r.seconds)}`,
    `programs: ${r.programs.map((p) => `${p.name}${p.libraries.length ? ` (+${p.libraries.length} libraries)` : ''}`).join(', ')}`,
    `modules: ${r.modules.length} carried${r.builtinModules.length ? `, built in: ${r.builtinModules.join(' ')}` : ''}`,
    ...(r.absentModules.length ? [`not in this kernel (optional): ${r.absentModules.join(' ')}`] : []),
    '',
  ].join('\n');
}
