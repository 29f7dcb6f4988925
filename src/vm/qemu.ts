import { existsSync } from 'node:fs';
import { ToolMissingError } from '../lib/errors.js';
import { run } from '../lib/run.js';

/** Debian's OVMF: a code and vars pair of the same size, as QEMU.md says to use. */
export const OVMF = {
  code: '/usr/share/OVMF/OVMF_CODE_4M.fd',
  vars: '/usr/share/OVMF/OVMF_VARS_4M.fd',
} as const;

export const QEMU_BINARY = 'qemu-system-x86_64';

export type Accel = 'kvm' | 'tcg';

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
  accel: Accel;
  /** The serial console: 'stdio' for a person, or a chardev spec for a harness. */
  serial: string;
  /** A network card on QEMU's user-mode network (NAT to this machine's network, no set-up needed). */
  network?: boolean;
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
  if (o.network) args.push('-nic', 'user,model=virtio-net-pci');
  args.push('-serial', o.serial);
  return args;
}

/** Longer than this for the KVM probe's firmware run, and KVM is not used (kvmWorks). */
export const KVM_SLOW_MS = 1500;

/**
 * Whether KVM really runs a guest here. /dev/kvm can exist and open while
 * its guests hang (a nested host: SeaBIOS stops after its memory map), so
 * a tiny guest is started: SeaBIOS with no disk, its debug port on stdout,
 * told to reboot at once when it finds nothing to boot (which -no-reboot
 * turns into QEMU exiting). A working KVM gets there in well under a
 * second; a refusal exits at once; a hang is cut at the timeout. A KVM that
 * gets there slowly is refused too: on one nested host it took 3 s where
 * software emulation takes 0.13 s, and a stick's boot under it then sat in
 * GRUB's disk reads for minutes.
 */
export async function kvmWorks(o: { device?: string; timeoutMs?: number } = {}): Promise<{ ok: boolean; why: string }> {
  const device = o.device ?? '/dev/kvm';
  const timeoutMs = o.timeoutMs ?? 10_000;
  const started = Date.now();
  if (!existsSync(device)) return { ok: false, why: `${device} does not exist` };
  const r = await run(
    QEMU_BINARY,
    ['-accel', 'kvm', '-nodefaults', '-display', 'none', '-monitor', 'none', '-m', '16', '-no-reboot', '-boot', 'reboot-timeout=0',
      '-chardev', 'stdio,id=debug', '-device', 'isa-debugcon,iobase=0x402,chardev=debug'],
    { timeoutMs, dieWithParent: true, okExitCodes: [1] },
  ).catch((e: Error) => {
    // No QEMU at all is the caller's error to report; anything else (the timeout) is a KVM that does not work.
    if (e instanceof ToolMissingError) throw e;
    return { exitCode: -1, stdout: '', stderr: '' };
  });
  const took = Date.now() - started;
  if (r.exitCode === 0 && /No bootable device/.test(r.stdout)) {
    if (took > KVM_SLOW_MS) return { ok: false, why: `a test guest under KVM took ${(took / 1000).toFixed(1)} s to run its firmware, where a working KVM takes a fraction of a second` };
    return { ok: true, why: 'a test guest ran under KVM' };
  }
  const said = r.stderr.split('\n').find((l) => /kvm/i.test(l))?.trim();
  return { ok: false, why: said ?? `a test guest under KVM did not finish its firmware within ${timeoutMs / 1000} s` };
}

/** The accelerator to use: the one asked for, or (auto) KVM when a test guest runs under it. */
export async function chooseAccel(requested: 'auto' | Accel): Promise<{ accel: Accel; why: string }> {
  if (requested !== 'auto') return { accel: requested, why: `--accel ${requested}` };
  const kvm = await kvmWorks();
  return kvm.ok ? { accel: 'kvm', why: kvm.why } : { accel: 'tcg', why: `KVM cannot be used: ${kvm.why}` };
}
