/**
 * How `cairn vm` chooses between KVM and software emulation. The probe's
 * QEMU is a stand-in script on PATH here (a real broken KVM cannot be made
 * on demand); each script behaves as QEMU was seen to: a working KVM runs
 * the firmware to "No bootable device" and exits, a missing module makes
 * QEMU refuse at once, and a nested KVM hangs in the firmware.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { chooseAccel, kvmWorks, stickBootArgs } from '../../src/vm/qemu.js';

describe('the KVM probe', () => {
  let dir: string;
  let path: string | undefined;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'cairn-accel-'));
    writeFileSync(join(dir, 'kvm'), '');
    path = process.env.PATH;
    process.env.PATH = `${dir}:${path}`;
  });
  afterEach(() => {
    process.env.PATH = path;
    rmSync(dir, { recursive: true, force: true });
  });
  const qemu = (body: string) => {
    writeFileSync(join(dir, 'qemu-system-x86_64'), `#!/bin/sh\n${body}\n`);
    chmodSync(join(dir, 'qemu-system-x86_64'), 0o755);
  };

  it('takes KVM when a test guest runs its firmware to the end under it', async () => {
    qemu('echo "Booting from Hard Disk..."; echo "No bootable device.  Retrying in 0 seconds."; exit 0');
    expect(await kvmWorks({ device: join(dir, 'kvm') })).toEqual({ ok: true, why: 'a test guest ran under KVM' });
  });

  it('refuses KVM when QEMU cannot initialise it, saying why', async () => {
    qemu('echo "qemu-system-x86_64: -accel kvm: failed to initialize kvm: No such file or directory" >&2; exit 1');
    const r = await kvmWorks({ device: join(dir, 'kvm') });
    expect(r.ok).toBe(false);
    expect(r.why).toContain('failed to initialize kvm');
  });

  it('refuses a KVM whose guest hangs, within its time limit', async () => {
    qemu('echo "e820 map"; exec sleep 30');
    const started = Date.now();
    const r = await kvmWorks({ device: join(dir, 'kvm'), timeoutMs: 1500 });
    expect(r).toEqual({ ok: false, why: 'a test guest under KVM did not finish its firmware within 1.5 s' });
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('refuses a KVM whose guest gets through its firmware, but slowly (a nested host: its disk reads crawl)', async () => {
    qemu('sleep 2; echo "No bootable device.  Retrying in 0 seconds."; exit 0');
    const r = await kvmWorks({ device: join(dir, 'kvm') });
    expect(r.ok).toBe(false);
    expect(r.why).toMatch(/^a test guest under KVM took 2\.\d s to run its firmware, where a working KVM takes a fraction of a second$/);
  });

  it('refuses KVM without the device, and never runs QEMU then', async () => {
    qemu('exit 99');
    expect(await kvmWorks({ device: join(dir, 'no-such-kvm') })).toEqual({ ok: false, why: `${join(dir, 'no-such-kvm')} does not exist` });
  });

  it('takes what --accel forces without probing', async () => {
    qemu('exit 99');
    expect(await chooseAccel('tcg')).toEqual({ accel: 'tcg', why: '--accel tcg' });
    expect(await chooseAccel('kvm')).toEqual({ accel: 'kvm', why: '--accel kvm' });
  });
});

describe('QEMU arguments for a stick', () => {
  const base = { image: '/tmp/cairn.img', firmware: 'bios', memoryMiB: 1024, bus: 'usb', accel: 'tcg', serial: 'mon:stdio' } as const;
  it('keeps the guest\'s writes, or sends them to a throw-away overlay', () => {
    expect(stickBootArgs({ ...base, persist: true })).toContain('file=/tmp/cairn.img,format=raw,if=none,id=stick');
    expect(stickBootArgs({ ...base, persist: false })).toContain('file=/tmp/cairn.img,format=raw,if=none,id=stick,snapshot=on');
  });
  it('attaches the stick as a USB stick on xHCI', () => {
    const args = stickBootArgs({ ...base, persist: true }).join(' ');
    expect(args).toContain('-device qemu-xhci -device usb-storage,drive=stick,bootindex=0');
    expect(args).toContain('-accel tcg');
    expect(args).not.toContain('-nic');
  });
  it('gives the guest a user-mode network card when asked', () => {
    expect(stickBootArgs({ ...base, persist: true, network: true }).join(' ')).toContain('-nic user,model=virtio-net-pci');
  });
});
