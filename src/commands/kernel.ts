import { Command } from 'commander';
import { formatBytes } from '../lib/format.js';
import { confirmKernel, installKernel, kernelPayloads } from '../packages/kernel.js';
import { resolveTarget, type TargetFlags } from '../packages/target.js';
import { UsageError } from '../lib/errors.js';
import { withTargetOptions } from './target.js';

export function kernelCommand(): Command {
  const install = withTargetOptions(
    new Command('install')
      .description('install the kernel of an unpacked package: modules image on the data partition, kernel and initramfs on the ESP, menu rebuilt with it as default')
      .requiredOption('--from <dir>', 'the unpacked package: holds lib/modules/<release>/ and boot/vmlinuz*')
      .option('--json', 'print the result as JSON'),
  ).action(async (flags: TargetFlags & { from: string; json?: boolean }) => {
    const t = await resolveTarget(flags);
    const payloads = await kernelPayloads(flags.from);
    if (!payloads.length) throw new UsageError(`${flags.from} holds no kernel (no lib/modules/<release>/kernel/)`);
    const reports = [];
    for (const p of payloads) reports.push(await installKernel(t, p));
    process.stdout.write(
      flags.json
        ? `${JSON.stringify(reports, null, 2)}\n`
        : reports
            .map((r) =>
              `installed kernel ${r.release}: ${r.modulesImage} ${formatBytes(r.modulesBytes)}, kernel ${formatBytes(r.kernelBytes)}, ` +
              `initramfs ${formatBytes(r.initramfsBytes)}; boots by default${r.previous ? `, ${r.previous} kept until it has booted` : ''}\n`,
            )
            .join(''),
    );
  });

  const confirm = withTargetOptions(
    new Command('confirm').description(
      'run at boot: once the default kernel has booted, remove the previous one and any kernel files no menu entry names',
    ),
  ).action(async (flags: TargetFlags) => {
    const report = await confirmKernel(await resolveTarget(flags));
    if (report.dropped) process.stdout.write(`kernel ${report.dropped} removed: the new default kernel has booted\n`);
    for (const o of report.orphans) process.stdout.write(`removed files of kernel ${o}, which no menu entry boots\n`);
  });

  return new Command('kernel').description('the kernels on the stick').addCommand(install).addCommand(confirm);
}
