/**
 * `cairn backup FILE` and `cairn restore FILE` on real ext4 data partitions
 * (loop devices) with sealed states, a user folder with owners, modes,
 * times, xattrs, symbolic and hard links, and an ESP as a FAT image written
 * with mtools: what a user checks after backup, reset and restore, and what
 * a damaged file or a cut during the restore leaves.
 */
import { execa } from 'execa';
import { randomUUID } from 'node:crypto';
import { existsSync, lstatSync, readdirSync } from 'node:fs';
import { appendFile, chmod, chown, link, mkdir, readFile, readdir, stat, symlink, truncate, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../src/config.js';
import { BOOT_STATE_FORMAT, ESP_PATHS, formatBootState, kernelFiles, readBootState } from '../../src/esp/bootState.js';
import { Esp } from '../../src/esp/esp.js';
import { BACKUP, DATA, modulesImage } from '../../src/names.js';
import { mksquashfsArgs } from '../../src/save/squash.js';
import { BLOCK } from '../../src/state/backupFormat.js';
import { readBackup } from '../../src/state/backup.js';
import { restoreBackup } from '../../src/state/restore.js';
import { encodeSeal, sha256Of } from '../../src/state/seal.js';
import { listStates, nextDefaultBoot } from '../../src/state/states.js';
import { snapshot } from '../helpers/states.js';
import { cairn, catFromImage, CLI, manifest, requireSystem, Scratch } from '../helpers/system.js';

const s = new Scratch();
let n = 0;

/** A sealed state whose file `marker` says MARKER, at NAME in DATA. */
async function state(data: string, name: string, marker: string, parent = ''): Promise<string> {
  const tree = s.path(`tree-${n++}`);
  await mkdir(tree);
  await writeFile(join(tree, 'marker'), marker);
  const image = join(data, name);
  await execa('mksquashfs', [tree, image, ...mksquashfsArgs(DEFAULTS)]);
  const size = (await stat(image)).size;
  const id = randomUUID();
  await appendFile(image, encodeSeal({ size, sha256: await sha256Of(image, size), id, parent, session: '', created: n, files: 2, space: 4096 }));
  await chmod(image, 0o600);
  return id;
}

/** A user folder with what a tree can hold that a careless copy loses. */
async function userFolder(data: string): Promise<void> {
  const u = join(data, DATA.userDir);
  await mkdir(join(u, 'docs/deep'), { recursive: true });
  await writeFile(join(u, 'docs/letter.txt'), 'dear stick\n');
  await writeFile(join(u, 'docs/deep/secret'), 'only mine\n', { mode: 0o600 });
  await link(join(u, 'docs/letter.txt'), join(u, 'letter-again.txt'));
  await symlink('docs/letter.txt', join(u, 'link'));
  await symlink('/nowhere', join(u, 'dangling'));
  await writeFile(join(u, 'sparse'), '');
  await truncate(join(u, 'sparse'), 64 << 20);
  await mkdir(join(u, 'private'), { mode: 0o700 });
  await execa('setfattr', ['-n', 'user.colour', '-v', 'blue', join(u, 'docs/letter.txt')]);
  await execa('setfattr', ['-n', 'user.dir', '-v', 'yes', join(u, 'docs')]);
  for (const p of ['docs', 'docs/letter.txt', 'docs/deep', 'docs/deep/secret', 'sparse', 'private', '.']) await chown(join(u, p), 1000, 1000);
  await chown(join(u, 'link'), 1000, 1000).catch(() => undefined);
  await execa('chown', ['-h', '1000:1000', join(u, 'link')]);
  await utimes(join(u, 'docs/letter.txt'), 1_000_000, 1_000_000);
  await utimes(join(u, 'private'), 2_000_000, 2_000_000);
  await chmod(u, 0o750);
}

/** Everything manifest() sees, and every entry's mtime (seconds: what squashfs keeps). */
async function userTree(data: string): Promise<Map<string, string>> {
  const root = join(data, DATA.userDir);
  const m = await manifest(root);
  for (const [rel, desc] of m) m.set(rel, `${desc} mtime ${Math.floor(lstatSync(rel === '.' ? root : join(root, rel)).mtimeMs / 1000)}`);
  return m;
}

/** A stick after some saves: the newest state (marker "newest"), its backup, a user folder. */
async function stick(): Promise<string> {
  const data = await s.dataPartition(`data-${n++}`, 160);
  const parent = await state(data, DATA.backup, 'backup');
  await state(data, DATA.newest, 'newest', parent);
  await userFolder(data);
  return data;
}

/** The data partition as a user sees it: names, each state's marker, user/'s tree. */
async function look(data: string) {
  return {
    names: readdirSync(data).sort(),
    states: await snapshot(data),
    user: existsSync(join(data, DATA.userDir)) ? await userTree(data) : undefined,
  };
}

const backupFile = (name: string) => s.path('backups', name);

/** An ESP as a FAT image with a boot record naming RELEASE, its files, and its modules image on DATA. */
async function espWith(data: string, release: string): Promise<Esp> {
  const image = s.path(`esp-${n++}.img`);
  await execa('truncate', ['-s', '64M', image]);
  await execa('mkfs.vfat', ['-F', '32', '-n', 'CAIRN-ESP', image]);
  const esp = new Esp(image);
  const boot = {
    format: BOOT_STATE_FORMAT,
    settings: { esp: { by: 'label', value: 'CAIRN-ESP' }, dataSpec: 'LABEL=cairn-data', upper: 'tmpfs', serialSpeed: 115200, primaryConsole: 'serial' },
    timeoutSeconds: 3,
    luks: false,
    kernel: kernelFiles(release),
  };
  await esp.install(ESP_PATHS.bootState, { data: formatBootState(boot as never) });
  await esp.install(ESP_PATHS.menu, { data: '# menu\n' });
  await esp.install(ESP_PATHS.kernel(release), { data: `kernel ${release}\n` });
  await esp.install(ESP_PATHS.initrd(release), { data: `initramfs ${release}\n` });
  await modulesFor(data, release);
  return esp;
}

async function modulesFor(data: string, release: string): Promise<void> {
  const tree = s.path(`mods-${n++}`);
  await mkdir(join(tree, 'kernel'), { recursive: true });
  await writeFile(join(tree, 'kernel', 'mod.ko'), `module of ${release}\n`);
  await execa('mksquashfs', [tree, join(data, modulesImage(release)), '-noappend', '-quiet']);
}


beforeAll(async () => {
  requireSystem(['mksquashfs', 'unsquashfs', 'getfattr', 'setfattr', 'losetup', 'mkfs.ext4', 'mkfs.vfat', 'mcopy']);
  await mkdir(s.path('backups'));
});
afterAll(() => s.cleanup());

describe('cairn backup', () => {
  it('writes one file only root can read, verified, with no temp file left beside it', async () => {
    const data = await stick();
    const file = backupFile('plain.cbk');
    const r = await cairn(['backup', file, '--data', data]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/wrote .*plain\.cbk \(.*\), read back and verified; only root can read it/);
    expect(r.stdout).toContain(`state: ${DATA.newest}`);
    expect(r.stdout).toContain('user folder: included');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect((await stat(file)).size % BLOCK).toBe(0);
    expect(readdirSync(s.path('backups')).filter((f) => f.startsWith('plain.cbk'))).toEqual(['plain.cbk']);
  });

  it('refuses an existing file unless --force, and a file on the data partition it backs up', async () => {
    const data = await stick();
    const file = backupFile('exists.cbk');
    await writeFile(file, 'keep me\n');
    const refused = await cairn(['backup', file, '--data', data]);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain(`${file}: exists`);
    expect(refused.stderr).toContain('pass --force to replace it');
    expect(await readFile(file, 'utf8')).toBe('keep me\n');
    const forced = await cairn(['backup', file, '--data', data, '--force']);
    expect(forced.exitCode, forced.stderr).toBe(0);

    for (const onStick of [join(data, 'x.cbk'), join(data, DATA.userDir, 'x.cbk')]) {
      const r = await cairn(['backup', onStick, '--data', data]);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain('is on the data partition it would back up');
      expect(existsSync(onStick)).toBe(false);
    }
  });

  it('killed while writing, leaves no FILE, and the next backup writes it whole', async () => {
    const data = await stick();
    // Enough data that the kill lands while the file is being written.
    await execa('dd', ['if=/dev/urandom', `of=${join(data, DATA.userDir, 'big')}`, 'bs=1M', 'count=96', 'status=none']);
    const file = backupFile('killed.cbk');
    const child = execa(process.execPath, [CLI, 'backup', file, '--data', data], { reject: false });
    const partial = `${file}${BACKUP.partialSuffix}`;
    // Killed once the file itself is being written (after the user folder's squash).
    for (let i = 0; i < 3000 && !existsSync(partial); i++) await new Promise((r) => setTimeout(r, 5));
    expect(existsSync(partial)).toBe(true);
    child.kill('SIGKILL');
    await child;
    expect(existsSync(file)).toBe(false);
    const r = await cairn(['backup', file, '--data', data]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(readdirSync(s.path('backups')).filter((f) => f.startsWith('killed.cbk'))).toEqual(['killed.cbk']);
    expect((await readBackup(file)).user).not.toBeNull();
  }, 120_000);

  it('backs up the backup state when the newest is damaged, and says so', async () => {
    const data = await stick();
    const fh = await import('node:fs/promises').then((f) => f.open(join(data, DATA.newest), 'r+'));
    await fh.write(Buffer.from('X'), 0, 1, 200);
    await fh.close();
    const r = await cairn(['backup', backupFile('from-backup.cbk'), '--data', data]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(`state: ${DATA.backup}`);
    expect(r.stdout).toContain(`warning: ${DATA.newest} is not in the backup: checksum mismatch`);
  });
});

describe('cairn restore', () => {
  it('backup, reset, restore: the state is the same image and user/ the same tree, owners, modes, times, xattrs and links', async () => {
    const data = await stick();
    const before = await look(data);
    const newestBytes = await readFile(join(data, DATA.newest));
    const file = backupFile('roundtrip.cbk');
    expect((await cairn(['backup', file, '--data', data])).exitCode).toBe(0);
    const reset = await cairn(['reset', '--yes', '--all', '--data', data]);
    expect(reset.exitCode, reset.stderr).toBe(0);
    expect(await readdir(join(data, DATA.userDir))).toEqual([]);

    const r = await cairn(['restore', file, '--yes', '--data', data]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain('the backup\'s state is now the newest');
    expect(r.stdout).toContain(`${data}/${DATA.userDir} holds the backup's user folder`);
    expect((await readFile(join(data, DATA.newest))).equals(newestBytes)).toBe(true);
    expect(nextDefaultBoot(await listStates(data, { full: true }))?.name).toBe(DATA.newest);
    expect((await stat(join(data, DATA.newest))).mode & 0o777).toBe(0o600);
    const after = await look(data);
    expect(after.user).toEqual(before.user);
    // The sparse file came back sparse.
    expect((await stat(join(data, DATA.userDir, 'sparse'))).blocks).toBeLessThan(1024);
    expect(after.names).toEqual(['lost+found', DATA.newest, DATA.userDir]);
  });

  it('keeps the current newest as the backup and the old backup as an older state', async () => {
    const data = await stick();
    const file = backupFile('rotate.cbk');
    expect((await cairn(['backup', file, '--data', data])).exitCode).toBe(0);
    // Later saves on the same stick: two new states the backup does not hold.
    const older = await state(data, 'later-backup.tmp', 'later backup');
    await execa('mv', [join(data, 'later-backup.tmp'), join(data, DATA.backup)]);
    await state(data, DATA.newest, 'later newest', older);

    const r = await cairn(['restore', file, '--yes', '--data', data]);
    expect(r.exitCode, r.stderr).toBe(0);
    const after = await snapshot(data);
    expect(after.newest).toBe('newest');
    expect(after.backup).toBe('later newest');
    // The later backup is an earlier state of the later newest: seen replaced, as a save treats it.
    expect(after.generations).toEqual([]);
    expect(after.stray).toEqual([DATA.userDir]);
  });

  it('refuses a file with a flipped byte anywhere, and leaves the stick as it was', async () => {
    const data = await stick();
    const file = backupFile('flip.cbk');
    expect((await cairn(['backup', file, '--data', data])).exitCode).toBe(0);
    const before = await look(data);
    const size = (await stat(file)).size;
    // The zeros that pad the manifest to a block: covered by no checksum, checked all the same.
    const padding = size - BLOCK - 1;
    expect((await readFile(file))[padding]).toBe(0);
    expect((await readBackup(file)).members.every((m) => m.offset + m.size <= padding)).toBe(true);
    // In the header, in a member (the state), in the user folder's image, in the padding, in the end block.
    for (const at of [10, BLOCK + 100, Math.floor(size / 2), padding, size - BLOCK + 30]) {
      const copy = backupFile(`flip-${at}.cbk`);
      const bytes = await readFile(file);
      bytes[at] = bytes[at]! ^ 0x01;
      await writeFile(copy, bytes);
      const r = await cairn(['restore', copy, '--yes', '--data', data]);
      expect(r.exitCode, `flip at ${at}: ${r.stderr}`).toBe(65);
      expect(r.stderr).toMatch(new RegExp(`${copy}: (not a cairn backup|its .* (does not match its checksum|damaged)|.*padding.* is damaged|it names no format|.*truncated or damaged)`));
      expect(await look(data)).toEqual(before);
    }
  });

  it('refuses a truncated file, a file that is no backup, and one of a newer format, with the reason', async () => {
    const data = await stick();
    const file = backupFile('cut.cbk');
    expect((await cairn(['backup', file, '--data', data])).exitCode).toBe(0);
    const before = await look(data);
    const bytes = await readFile(file);
    const cases: [string, Buffer, RegExp][] = [
      ['cut-half', bytes.subarray(0, Math.floor(bytes.length / 2)), /it has no end block: the file is truncated or damaged|does not account for/],
      ['cut-block', bytes.subarray(0, bytes.length - BLOCK), /it has no end block: the file is truncated or damaged/],
      ['cut-byte', bytes.subarray(0, bytes.length - 1), /truncated or damaged/],
      ['tiny', bytes.subarray(0, 100), /it is only 100 bytes: truncated/],
      ['not-backup', await readFile(join(data, DATA.newest)), /not a cairn backup/],
      ['newer', Buffer.concat([Buffer.from(bytes.subarray(0, BLOCK).toString('latin1').replace('format=1', 'format=2'), 'latin1'), bytes.subarray(BLOCK)]), /written by a newer cairn \(backup format 2; this cairn reads format 1\)/],
    ];
    for (const [name, content, message] of cases) {
      const copy = backupFile(`${name}.cbk`);
      await writeFile(copy, content);
      const r = await cairn(['restore', copy, '--yes', '--data', data]);
      expect(r.exitCode, name).toBe(65);
      expect(r.stderr, name).toMatch(message);
      expect(await look(data)).toEqual(before);
    }
  });

  it('changes nothing without a terminal to confirm on, unless --yes', async () => {
    const data = await stick();
    const file = backupFile('confirm.cbk');
    expect((await cairn(['backup', file, '--data', data])).exitCode).toBe(0);
    await state(data, DATA.newest, 'later');
    const before = await look(data);
    const r = await cairn(['restore', file, '--data', data]);
    expect(r.exitCode).toBe(3);
    expect(r.stderr).toContain('nothing was changed');
    expect(r.stderr).toContain('type RESTORE when asked, or pass --yes');
    expect(await look(data)).toEqual(before);
  });

  it('cut after any step, leaves a stick whose default boot finds an intact state, and restoring again finishes it', async () => {
    const probe = await stick();
    const file = backupFile('cut-steps.cbk');
    const probeEsp = await espWith(probe, '6.1.0-old');
    expect((await cairn(['backup', file, '--data', probe, '--esp', probeEsp.device])).exitCode).toBe(0);
    const wanted = await userTree(probe);
    const opts = async (data: string, stopAfterSteps?: number) => ({
      file,
      dataDir: data,
      lock: { waitSeconds: 0, session: 'test' },
      bootRecord: undefined,
      runDir: undefined,
      // A stick built with another kernel: the restore's kernel step has work to do.
      esp: await espWith(data, '6.9.0-new'),
      runningKernel: undefined,
      confirm: async () => true,
      stopAfterSteps,
    });
    const total = (await restoreBackup(await opts(await changedStick()))).stepsTotal;
    expect(total).toBeGreaterThanOrEqual(8);
    for (let k = 0; k < total; k++) {
      const data = await changedStick();
      const o = await opts(data, k);
      const cut = await restoreBackup(o);
      expect(cut.stepsRun, `cut after ${k}`).toBe(k);
      const boots = nextDefaultBoot(await listStates(data, { full: true }));
      expect(boots, `cut after ${k}`).toBeDefined();
      expect(['newest', 'changed']).toContain(await catFromImage(boots!.path, 'marker'));
      // Every kernel the menu offers has its kernel, initramfs and modules.
      const boot = await readBootState(o.esp);
      for (const kernel of [boot.kernel, boot.previousKernel].filter((x) => x !== undefined)) {
        expect(await o.esp.exists(ESP_PATHS.kernel(kernel.release)), `cut after ${k}`).toBe(true);
        expect(await o.esp.exists(ESP_PATHS.initrd(kernel.release)), `cut after ${k}`).toBe(true);
        expect(existsSync(join(data, modulesImage(kernel.release))), `cut after ${k}`).toBe(true);
      }
      // user/ is the old one or the restored one, whole, or (between the two renames) missing with both kept.
      if (existsSync(join(data, DATA.userDir))) {
        const tree = await userTree(data);
        if (!tree.has('changed.txt')) expect(tree, `cut after ${k}`).toEqual(wanted);
      } else {
        expect(existsSync(join(data, BACKUP.userReady)) && existsSync(join(data, BACKUP.userOld)), `cut after ${k}`).toBe(true);
      }
      const again = await cairn(['restore', file, '--yes', '--data', data, '--esp', o.esp.device]);
      expect(again.exitCode, again.stderr).toBe(0);
      expect((await snapshot(data)).newest).toBe('newest');
      expect((await readBootState(o.esp)).kernel.release).toBe('6.1.0-old');
      expect(await userTree(data)).toEqual(wanted);
      expect(readdirSync(data).filter((f) => f.startsWith('.cairn-restore') || f === DATA.temp)).toEqual([]);
    }
  }, 600_000);

  it('a cut between the two renames of user/ is finished by the next restore, also after a boot made an empty user/', async () => {
    const probe = await stick();
    const file = backupFile('swap.cbk');
    expect((await cairn(['backup', file, '--data', probe])).exitCode).toBe(0);
    const wanted = await userTree(probe);
    for (const bootedSince of [false, true]) {
      const data = await changedStick();
      // Run up to the unpacked copy, then do the swap's first rename as the cut left it.
      const opts = { file, dataDir: data, lock: { waitSeconds: 0, session: 'test' }, bootRecord: undefined, runDir: undefined, esp: undefined, runningKernel: undefined, confirm: async () => true };
      const total = (await restoreBackup({ ...opts, dataDir: await changedStick() })).stepsTotal;
      await restoreBackup({ ...opts, stopAfterSteps: total - 2 });
      expect(existsSync(join(data, BACKUP.userReady))).toBe(true);
      await execa('mv', [join(data, DATA.userDir), join(data, BACKUP.userOld)]);
      // cairn-userdirs makes user/ afresh, empty, when it is missing at boot.
      if (bootedSince) await mkdir(join(data, DATA.userDir));
      const r = await cairn(['restore', file, '--yes', '--data', data]);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(await userTree(data)).toEqual(wanted);
      expect(readdirSync(data).filter((f) => f.startsWith('.cairn-restore'))).toEqual([]);
    }
  });

  it('the session that restored is not saved at shutdown unless the user confirms', async () => {
    const data = await stick();
    const file = backupFile('session.cbk');
    expect((await cairn(['backup', file, '--data', data])).exitCode).toBe(0);
    const run = s.path(`run-${n++}`);
    await mkdir(run);
    const record = join(run, 'boot');
    await writeFile(record, 'requested=default\nused=default\nsession=x\n');
    const r = await cairn(['restore', file, '--yes', '--data', data, '--boot-record', record]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain('reboot to use it: this session will not be saved at shutdown');
    const upper = s.path(`upper-${n++}`);
    await mkdir(upper);
    await writeFile(join(upper, 'marker'), 'this session\n');
    const refused = await cairn(['save', '--upper', upper, '--data', data, '--boot-record', record]);
    expect(refused.exitCode).toBe(3);
    expect(refused.stderr).toMatch(/this session restored a backup onto the stick: nothing is saved unless you confirm/);
    expect((await snapshot(data)).newest).toBe('newest');
  });

  it('a backup of the newest state restored on the same stick leaves its states as they are', async () => {
    const data = await stick();
    const file = backupFile('same.cbk');
    expect((await cairn(['backup', file, '--data', data])).exitCode).toBe(0);
    const r = await cairn(['restore', file, '--yes', '--data', data]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain('the newest state already is the backup\'s: left as it is');
    const after = await snapshot(data);
    expect([after.newest, after.backup]).toEqual(['newest', 'backup']);
  });

  /** A stick with the restored-from backup's states and user folder changed since. */
  async function changedStick(): Promise<string> {
    const data = await stick();
    await state(data, DATA.newest, 'changed');
    await writeFile(join(data, DATA.userDir, 'changed.txt'), 'new since the backup\n');
    return data;
  }
});

describe('the kernels\' state', () => {
  it('a stick that boots another kernel boots the backup\'s after the restore, its own kept as the second choice', async () => {
    const data = await stick();
    const esp = await espWith(data, '6.1.0-old');
    const file = backupFile('kernel.cbk');
    const b = await cairn(['backup', file, '--data', data, '--esp', esp.device]);
    expect(b.exitCode, b.stderr).toBe(0);
    expect(b.stdout).toContain('kernel: 6.1.0-old');

    // Another stick, built with a newer kernel.
    const other = await s.dataPartition(`data-${n++}`, 160);
    const otherEsp = await espWith(other, '6.9.0-new');
    const r = await cairn(['restore', file, '--yes', '--data', other, '--esp', otherEsp.device]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain('the stick boots kernel 6.1.0-old, the backup\'s');
    const boot = await readBootState(otherEsp);
    expect(boot.kernel.release).toBe('6.1.0-old');
    expect(boot.previousKernel?.release).toBe('6.9.0-new');
    expect((await otherEsp.read(ESP_PATHS.kernel('6.1.0-old')))!.toString()).toBe('kernel 6.1.0-old\n');
    expect((await otherEsp.read(ESP_PATHS.initrd('6.1.0-old')))!.toString()).toBe('initramfs 6.1.0-old\n');
    expect(await catFromImage(join(other, modulesImage('6.1.0-old')), 'kernel/mod.ko')).toBe('module of 6.1.0-old');
    expect(existsSync(join(other, modulesImage('6.9.0-new')))).toBe(true);
    expect((await esp.read(ESP_PATHS.menu))!.toString()).toContain('# menu');
    expect((await otherEsp.read(ESP_PATHS.menu))!.toString()).toContain('6.1.0-old');
  });

  it('a stick that already boots the backup\'s kernel keeps its boot record as it is', async () => {
    const data = await stick();
    const esp = await espWith(data, '6.1.0-same');
    const file = backupFile('kernel-same.cbk');
    expect((await cairn(['backup', file, '--data', data, '--esp', esp.device])).exitCode).toBe(0);
    const record = await esp.read(ESP_PATHS.bootState);
    const r = await cairn(['restore', file, '--yes', '--data', data, '--esp', esp.device]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).not.toContain('the stick boots kernel');
    expect((await esp.read(ESP_PATHS.bootState))!.equals(record!)).toBe(true);
  });
});
