import { Command, Option } from 'commander';
import { execa } from 'execa';
import { copyFile, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { PathError, ToolMissingError, UsageError } from '../lib/errors.js';
import { withTempDir } from '../lib/resources.js';
import { log } from '../lib/log.js';
import { dyingWithParent } from '../lib/run.js';
import { grownCopy } from '../vm/diskSize.js';
import { chooseAccel, OVMF, QEMU_BINARY, stickBootArgs } from '../vm/qemu.js';

interface VmFlags {
  uefi?: boolean;
  memory: string;
  snapshot?: boolean;
  persist?: boolean;
  bus: string;
  accel: string;
  network: boolean;
  diskSize?: string;
}

/**
 * `cairn vm IMAGE`: boots a stick image in QEMU with its serial console on
 * this terminal, so anyone can try cairn without a stick. What the guest
 * saves stays in the image, as it would on a stick, unless --snapshot.
 * --disk-size boots a copy grown to that size instead, so that the first
 * boot's growth of the data partition can be seen. Ctrl-A X leaves QEMU.
 */
export function vmCommand(): Command {
  return new Command('vm')
    .description('boot a stick image in QEMU, with the serial console on this terminal (Ctrl-A X quits)')
    .argument('<image>', 'the stick image (.img)')
    .option('--uefi', 'boot through UEFI firmware (OVMF) instead of legacy BIOS')
    .option('--memory <MiB>', 'guest memory', '1024')
    .option('--snapshot', 'throw away what the guest writes when QEMU exits (the image stays as it is)')
    .addOption(new Option('--persist', 'keep what the guest writes in the image (the default)').hideHelp())
    .option('--bus <bus>', 'attach the stick as usb or virtio', 'usb')
    .option('--accel <accel>', 'auto (KVM when a test guest runs under it), kvm or tcg (software emulation)', 'auto')
    .option('--disk-size <size>', 'boot a copy of the image as a stick of this size (16G, 64000M), made beside it as <image>-<size>.img on the first run and reused after: its first boot grows the data partition to fill it')
    .option('--no-network', 'no network card (by default the guest reaches this machine\'s network through QEMU\'s user-mode NAT)')
    .action(async (given: string, f: VmFlags) => {
      const st = await stat(given).catch(() => undefined);
      if (!st?.isFile()) throw new PathError(given, 'no such image file');
      if (!/^[0-9]+$/.test(f.memory)) throw new UsageError(`--memory "${f.memory}" is not a number of MiB`);
      if (f.bus !== 'usb' && f.bus !== 'virtio') throw new UsageError(`--bus "${f.bus}" is not usb or virtio`);
      if (!['auto', 'kvm', 'tcg'].includes(f.accel)) throw new UsageError(`--accel "${f.accel}" is not auto, kvm or tcg`);
      if (f.snapshot && f.persist) throw new UsageError('--snapshot and --persist contradict each other');
      if (f.uefi && !existsSync(OVMF.code)) throw new ToolMissingError('OVMF', 'install ovmf (apt-get install ovmf)');
      let image = given;
      if (f.diskSize !== undefined) {
        const copy = await grownCopy(given, f.diskSize);
        image = copy.path;
        process.stderr.write(
          copy.made
            ? `cairn vm: made ${image}, a copy of ${given} as a ${f.diskSize} stick; its first boot grows the data partition to fill it\n`
            : `cairn vm: booting ${image}, the ${f.diskSize} copy of ${given} made earlier\n`,
        );
      }
      const { accel, why } = await chooseAccel(f.accel as 'auto' | 'kvm' | 'tcg');
      const firmware = f.uefi ? 'uefi' : 'bios';
      process.stderr.write(
        `cairn vm: ${image} as a ${f.bus === 'usb' ? 'USB stick' : 'virtio disk'}, ${firmware === 'uefi' ? 'UEFI' : 'BIOS'}, ` +
          `${accel === 'kvm' ? 'KVM' : 'software emulation, slow: minutes per boot'} (${why}); ` +
          `${f.snapshot ? 'what the guest writes is thrown away at exit (--snapshot)' : 'what the guest saves stays in the image (--snapshot throws it away)'}; ` +
          `${f.network ? 'network through QEMU\'s user-mode NAT (--no-network: none)' : 'no network (--no-network)'}. ` +
          'Ctrl-A X quits.\n',
      );
      await withTempDir('cairn-vm-', async (dir) => {
        const uefiVars = f.uefi ? `${dir}/OVMF_VARS.fd` : undefined;
        if (uefiVars) await copyFile(OVMF.vars, uefiVars);
        const args = stickBootArgs({
          image,
          firmware,
          uefiVars,
          memoryMiB: Number(f.memory),
          persist: !f.snapshot,
          bus: f.bus as 'usb' | 'virtio',
          accel,
          serial: 'mon:stdio',
          network: f.network,
        });
        log.debug({ args }, 'qemu');
        // QEMU dies with cairn (setpriv --pdeathsig), so a killed `cairn vm` leaves no guest behind.
        const [cmd, argv] = dyingWithParent(QEMU_BINARY, args);
        // The terminal belongs to the guest until QEMU exits.
        const r = await execa(cmd, argv, { stdio: 'inherit', reject: false });
        if ((r as { code?: string }).code === 'ENOENT' || (cmd !== QEMU_BINARY && r.exitCode === 127)) {
          throw new ToolMissingError(QEMU_BINARY, 'install qemu-system-x86 (apt-get install qemu-system-x86)');
        }
        if (r.exitCode !== 0) process.exitCode = r.exitCode ?? 1;
      });
    });
}
