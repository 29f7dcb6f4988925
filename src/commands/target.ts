import type { Command } from 'commander';
import type { TargetFlags } from '../packages/target.js';

/** The options that name a stick other than the running one (tests, a stick worked on from outside). */
export function withTargetOptions(cmd: Command): Command {
  return cmd
    .option('--data <dir>', 'the data partition, mounted (default: the running system\'s)')
    .option('--esp <path>', 'the ESP: a block device or a FAT image file (default: the partition labelled CAIRN-ESP)')
    .option('--init-dir <dir>', 'the early-boot module for initramfs builds (default: cairn\'s own)')
    .option('--running-kernel <release>', 'the kernel taken as running, with --data (default: uname -r on the running system)');
}

export type { TargetFlags };
