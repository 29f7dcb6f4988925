import { Command } from 'commander';
import { execa } from 'execa';
import { copyFile, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { PathError, ToolMissingError, UsageError } from '../lib/errors.js';
import { withTempDir } from '../lib/resources.js';
import { log } from '../lib/log.js';
import { bestAccel, OVMF, stickBootArgs } from '../vm/qemu.js';

interface VmFlags {
  uefi?: boolean;
  memory: string;
  persist?: boolean;
  bus: string;
}

/**
 * `cairn vm IMAGE`: boots a stick image in QEMU with its serial console on
 * this terminal, so anyone can try cairn without a stick. The image is not
 * changed unless --persist is given. Ctrl-A X leaves QEMU.
 */
export function vmCommand(): Command {
  return new Command('vm')
    .description('boot a stick image in QEMU, with the serial console on this terminal (Ctrl-A X quits)')
    .argument('<image>', 'the stick image (.img)')
    .option('--uefi', 'boot through UEFI firmware (OVMF) instead of legacy BIOS')
    .option('--memory <MiB>', 'guest memory', '1024')
    .option('--persist', 'keep what the guest writes (saved states) in the image')
    .option('--bus <bus>', 'attach the stick as usb or virtio', 'usb')
    .action(async (image: string, f: VmFlags) => {
      const st = await stat(image).catch(() => undefined);
      if (!st?.isFile()) throw new PathError(image, 'no such image file');
      if (!/^[0-9]+$/.test(f.memory)) throw new UsageError(`--memory "${f.memory}" is not a number of MiB`);
      if (f.bus !== 'usb' && f.bus !== 'virtio') throw new UsageError(`--bus "${f.bus}" is not usb or virtio`);
      if (f.uefi && !existsSync(OVMF.code)) throw new ToolMissingError('OVMF', 'install ovmf (apt-get install ovmf)');
      await withTempDir('cairn-vm-', async (dir) => {
        const uefiVars = f.uefi ? `${dir}/OVMF_VARS.fd` : undefined;
        if (uefiVars) await copyFile(OVMF.vars, uefiVars);
        const args = stickBootArgs({
          image,
          firmware: f.uefi ? 'uefi' : 'bios',
          uefiVars,
          memoryMiB: Number(f.memory),
          persist: f.persist === true,
          bus: f.bus as 'usb' | 'virtio',
          accel: bestAccel(),
          serial: 'mon:stdio',
        });
        log.debug({ args }, 'qemu');
        // The terminal belongs to the guest until QEMU exits.
        const r = await execa('qemu-system-x86_64', args, { stdio: 'inherit', reject: false });
        if ((r as { code?: string }).code === 'ENOENT') {
          throw new ToolMissingError('qemu-system-x86_64', 'install qemu-system-x86 (apt-get install qemu-system-x86)');
        }
      });
    });
}
