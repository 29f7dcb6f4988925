/**
 * A user's day with cairn, end to end: the debian image built by `cairn image
 * build`, booted in QEMU through the firmware and GRUB (entries picked over
 * the serial console), logged into, changed, powered off (the shutdown save
 * runs), and booted again. One image, one boot per step (two for the
 * power cut of step 6), in order. The
 * system update of the day (step 8) and the UEFI boots are in
 * test/vm/stick-update.test.ts, on a copy of the same built image, so the
 * two run side by side (test/helpers/vm-stick.ts).
 */
import { execa } from 'execa';
import { closeSync, mkdirSync, openSync, readSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planLayout } from '../../src/image/layout.js';
import { CACHE } from '../helpers/vm-kernel.js';
import { prepareStick, SIZE_MIB, type StickBoots, useRepo } from '../helpers/vm-stick.js';

const WORK = join(CACHE, 'stick');

let boots: StickBoots;

/** The sha256 of the newest state on the image's data partition, read from the host. */
async function stateDigest(image: string): Promise<string> {
  const layout = planLayout(SIZE_MIB * 1024 * 1024, 256);
  const mnt = join(WORK, 'mnt');
  mkdirSync(mnt, { recursive: true });
  await execa('mount', ['-o', `ro,loop,offset=${layout.data.startSector * 512}`, image, mnt]);
  try {
    return (await execa('sha256sum', [join(mnt, 'upperfs.squashfs')])).stdout.split(' ')[0]!;
  } finally {
    await execa('umount', [mnt]);
  }
}

/** Flips one byte in the middle of a state's squashfs part (not its seal), from the host. */
async function corruptOnImage(image: string, file: string): Promise<void> {
  const layout = planLayout(SIZE_MIB * 1024 * 1024, 256);
  const mnt = join(WORK, 'mnt');
  mkdirSync(mnt, { recursive: true });
  await execa('mount', ['-o', `loop,offset=${layout.data.startSector * 512}`, image, mnt]);
  try {
    const path = join(mnt, file);
    const at = Math.floor((statSync(path).size - 4096) / 2);
    const fd = openSync(path, 'r+');
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ 0xff;
    writeSync(fd, b, 0, 1, at);
    closeSync(fd);
  } finally {
    await execa('umount', [mnt]);
  }
}

describe.sequential('a user\'s day with a cairn stick (debian image, QEMU)', () => {
  let image: string;

  beforeAll(async () => {
    ({ image, boots } = await prepareStick(WORK, 'stick'));
  }, 1800_000);

  afterAll(async () => {
    await boots?.stopAll();
    rmSync(join(WORK, 'mnt'), { recursive: true, force: true });
  });

  it('1. first boot, default entry: the system comes up with nothing saved yet', async () => {
    const s = await boots.boot('1-first', image, 'default');
    // The image's Node.js runs cairn from the code cache the build made (src/entry.mjs).
    expect(await s.ok('CAIRN_CODE_CACHE=check cairn --version 2>&1 >/dev/null')).toBe('cairn: code cache used');
    const status = await s.ok('cairn status');
    expect(status).toMatch(/booted: default, nothing saved yet/);
    expect(status).toMatch(/none yet/);
    // 2. changes everywhere a user makes them, and a base file deleted
    await s.ok('echo etc-change > /etc/cairn-test.conf && echo root-change > /root/notes && mkdir -p /var/lib/cairn-test && echo var-change > /var/lib/cairn-test/data');
    await s.ok('su - cairn -c "echo home-change > ~/hello.txt"');
    await s.ok('rm /etc/issue.net');
    await useRepo(s);
    await s.ok('apt-get install -y -q hello', 600_000);
    expect(await s.ok('hello')).toBe('Hello, world!');
    const shutdown = await s.powerOff();
    expect(shutdown).toMatch(/Saving this session to the stick/);
    expect(shutdown).toMatch(/saved [\d.]+ \w+ \(\d+ files/);
  }, 900_000);

  it('3. default boot: every change is there and the deleted file stays deleted', async () => {
    const s = await boots.boot('3-default', image, 'default');
    // The power-off after the save left the data partition read-only: its
    // journal needs no replay, by the boot's check or by the kernel.
    expect(s.vm.output).toMatch(/EXT4-fs \(\w+\): mounted filesystem/);
    expect(s.vm.output).not.toMatch(/journal replayed|not cleanly unmounted|EXT4-fs \(\w+\): recovery complete/);
    expect(await s.ok('cat /etc/cairn-test.conf /root/notes /var/lib/cairn-test/data /home/cairn/hello.txt')).toBe(
      'etc-change\nroot-change\nvar-change\nhome-change',
    );
    expect((await s.run('test -e /etc/issue.net')).code).toBe(1);
    expect(await s.ok('hello')).toBe('Hello, world!');
    expect(await s.ok('dpkg-query -W -f \'${Status}\' hello')).toBe('install ok installed');
    // Boot counting (docs/boot.md): step 1's shutdown save put the newest
    // state on trial, GRUB took a try, and the boot, once up, confirmed it.
    expect(s.vm.output).toContain('cairn: the newest state is on trial, tries left: 2');
    const status = await s.ok('cairn status');
    expect(status).toMatch(/booted: default/);
    expect(status).toContain('the newest state: confirmed');
    await s.ok('echo step-3 > /root/step3');
    expect(await s.powerOff()).toMatch(/Saving this session to the stick/);
  }, 900_000);

  it('4. backup entry: the state from before step 3 is there, step 3\'s change is not', async () => {
    const s = await boots.boot('4-backup', image, 'backup');
    expect(s.vm.output).not.toMatch(/journal replayed|not cleanly unmounted|EXT4-fs \(\w+\): recovery complete/);
    expect(await s.ok('cat /root/notes')).toBe('root-change');
    expect((await s.run('test -e /root/step3')).code).toBe(1);
    expect(await s.ok('cairn status')).toMatch(/booted: backup/);
    await s.powerOff();
  }, 900_000);

  it('5. clean entry: nothing saved is there, and powering off saves nothing', async () => {
    const before = await stateDigest(image);
    const s = await boots.boot('5-clean', image, 'clean');
    expect((await s.run('test -e /root/notes')).code).toBe(1);
    expect(await s.ok('cairn status')).toMatch(/booted: clean/);
    await s.ok('echo clean > /root/clean-session');
    expect(await s.powerOff()).toMatch(/booted clean: nothing is saved/);
    // Read from the host: the newest state is the one from before, byte for byte.
    expect(await stateDigest(image)).toBe(before);
  }, 1200_000);

  it('6. a corrupt upperfs.squashfs: the default boot passes over it and says so; the timer\'s checkpoint of that session, then QEMU killed in the middle of the shutdown save: the next boot unpacks the checkpoint', async () => {
    // Step 4's shutdown save wrote a checkpoint over the backup it booted
    // (docs/saving.md "Checkpoints"): the newest state is that delta, the
    // tip of a chain whose base is the backup.
    await corruptOnImage(image, 'upperfs.squashfs');
    const s = await boots.boot('6-corrupt', image, 'default');
    // The state was sealed by this cairn: the boot's check is the whole file's cksum (docs/state-format.md).
    // A damaged link ends its chain: the links before it, here the base alone, boot.
    expect(s.vm.output).toMatch(/upperfs\.squashfs fails its checksum \(cksum mismatch\): the chain ends before it; dropped: upperfs\.squashfs/);
    const status = await s.ok('cairn status');
    expect(status).toMatch(/booted: default/);
    expect(status).toMatch(/fallback: upperfs\.squashfs: its checkpoint chain ended early/);
    expect(await s.ok('cat /root/notes')).toBe('root-change');
    // The timer that writes checkpoints runs in every session, a fallback's too.
    expect(await s.ok('rc-service cairn-checkpoint status')).toMatch(/started/);
    // This stick's states are a few hundred KiB, so its checkpoints soon
    // weigh more than half the base and a save makes a whole state instead
    // (chain_ratio): a user who wants long chains says so in cairn.conf.
    await s.ok('echo chain_ratio=10 >> /etc/cairn/cairn.conf');
    await s.ok('echo kept-by-the-checkpoint > /root/checkpointed');
    // The timer writes the checkpoint by itself: every minute from here on
    // (its loop reads checkpoint_interval every minute, and the session is
    // older than one), its words in its log.
    const written = async () => (await s.ok('cat /var/log/cairn-checkpoint.log').catch(() => '')).match(/^saved a checkpoint of .*: a base and \d+ checkpoints?$/gm) ?? [];
    const before = (await written()).length;
    await s.ok('echo checkpoint_interval=1 >> /etc/cairn/cairn.conf');
    for (let i = 0; i < 40 && (await written()).length === before; i++) await new Promise((r) => setTimeout(r, 5000));
    expect((await written()).length).toBeGreaterThan(before);
    // No more of them: the power cut below is to meet the shutdown save.
    await s.ok('echo checkpoint_interval=0 >> /etc/cairn/cairn.conf');
    await s.ok('dd if=/dev/urandom of=/root/big bs=1M count=64 status=none');
    s.vm.send('poweroff\r');
    await s.vm.waitFor('Saving this session to the stick', 300_000);
    // A power cut in the middle of the save.
    await s.vm.stop();
    const again = await boots.boot('6-after-kill', image, 'default');
    try {
      // The save was cut short: the checkpoint is the newest state, or the save's own delta over it if it got that far.
      expect(again.vm.output).toMatch(/cairn: booting the newest state \(upperfs\.squashfs\), id [0-9a-f-]+: a base and \d+ checkpoints?/);
      expect(await again.ok('cat /root/checkpointed /root/notes')).toBe('kept-by-the-checkpoint\nroot-change');
      const after = await again.ok('cairn status');
      expect(after).toMatch(/next default boot: default/);
      // The damaged state is kept, held, as an older one: the newest is whole.
      expect(after).not.toMatch(/default\s+upperfs\.squashfs.*DAMAGED/);
    } finally {
      await again.vm.stop();
    }
  }, 1500_000);
});
