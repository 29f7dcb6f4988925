import { existsSync } from 'node:fs';

/** Debian's OVMF: a code and vars pair of the same size, as QEMU.md says to use. */
export const OVMF = {
  code: '/usr/share/OVMF/OVMF_CODE_4M.fd',
  vars: '/usr/share/OVMF/OVMF_VARS_4M.fd',
} as const;

export interface StickBootOptions {
  image: string;
  firmware: 'bios' | 'uefi';
  /** A private copy of OVMF's vars file, for UEFI. */
  uefiVars?: string;
  memoryMiB: number;
  /** Keep the guest's writes in the image; otherwise they go to a throw-away overlay. */
  persist: boolean;
  /** How the stick is attached: usb as a real stick is, virtio for speed. */
  bus: 'usb' | 'virtio';
  accel: 'kvm' | 'tcg';
  /** The serial console: 'stdio' for a person, or a chardev spec for a harness. */
  serial: string;
}

/** QEMU's arguments for booting a stick image through firmware and GRUB. */
export function stickBootArgs(o: StickBootOptions): string[] {
  const drive = `file=${o.image},format=raw,if=none,id=stick${o.persist ? '' : ',snapshot=on'}`;
  const args = ['-accel', o.accel, '-m', String(o.memoryMiB), '-smp', '2', '-no-reboot', '-nodefaults', '-display', 'none'];
  if (o.firmware === 'uefi') {
    if (!o.uefiVars) throw new Error('a UEFI boot needs its own copy of the OVMF vars file');
    args.push('-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF.code}`, '-drive', `if=pflash,format=raw,unit=1,file=${o.uefiVars}`);
  }
  args.push('-drive', drive);
  if (o.bus === 'usb') args.push('-device', 'qemu-xhci', '-device', 'usb-storage,drive=stick,bootindex=0');
  else args.push('-device', 'virtio-blk-pci,drive=stick,bootindex=0');
  args.push('-serial', o.serial);
  return args;
}

/** KVM when this machine offers it, software emulation otherwise. */
export function bestAccel(): 'kvm' | 'tcg' {
  return existsSync('/dev/kvm') ? 'kvm' : 'tcg';
}
