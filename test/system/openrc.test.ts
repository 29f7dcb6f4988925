import { execa } from 'execa';
import { existsSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loginNotice } from '../../src/image/configure.js';
import { writeHeld } from '../../src/state/held.js';
import { DATA, RUNTIME } from '../../src/names.js';
import { CLI, listDir, requireSystem, Scratch } from '../helpers/system.js';

/**
 * The OpenRC services, run under busybox sh. OpenRC itself cannot run on
 * this build host (it would have to be the host's init), so its helper
 * functions (ebegin, eend, einfo, ewarn) are stood in for by printers, and
 * each service's start()/stop() is called the way openrc-run would. The
 * whole-system VM test runs them under the real OpenRC.
 */
const OPENRC_SHIM = `
ebegin() { echo "* $*"; }
einfo() { echo "* $*"; }
ewarn() { echo "* warning: $*"; }
eerror() { echo "* error: $*"; }
eend() { s=\${1:-0}; shift; [ "$s" -eq 0 ] && echo "[ ok ]" || echo "[ !! ] $*"; return "$s"; }
`;

async function service(script: string, fn: string, vars: Record<string, string>, prelude = '') {
  const assign = Object.entries(vars)
    .map(([k, v]) => `${k}='${v}'`)
    .join('\n');
  const body = `${OPENRC_SHIM}\n${assign}\n. '${resolve('openrc', script)}'\n${prelude}\n${fn}`;
  const r = await execa('busybox', ['sh', '-c', body], { reject: false, all: true });
  return { exitCode: r.exitCode ?? -1, out: r.all ?? '' };
}

describe('openrc services pass shellcheck', () => {
  it('shellcheck -s sh and shfmt', async () => {
    const files = listDir('openrc').filter((f) => f.endsWith('.initd') || f.endsWith('.loop')).map((f) => join('openrc', f));
    expect(files.length).toBe(7);
    const sc = await execa('shellcheck', ['-s', 'sh', ...files], { reject: false, cwd: '.' });
    expect(sc.stdout).toBe('');
    const fmt = await execa('shfmt', ['-d', '-p', ...files], { reject: false });
    expect(fmt.stdout).toBe('');
  });
});

describe('cairn-save at shutdown', () => {
  const s = new Scratch();
  let data: string;
  let upper: string;
  let wrapper: string;
  const record = (requested: string) => {
    const path = s.path(`boot-${requested}`);
    return writeFile(path, `requested=${requested}\nused=${requested === 'clean' ? 'clean' : 'default'}\nsession=x\n`).then(() => path);
  };
  beforeAll(async () => {
    requireSystem(['mksquashfs', 'busybox', 'shellcheck', 'shfmt']);
    data = await s.dataPartition();
    upper = s.path('upper');
    await mkdir(upper);
    await writeFile(join(upper, 'file'), 'saved at shutdown\n');
    wrapper = s.path('cairn');
  });
  afterAll(() => s.cleanup());

  const cairnFor = async (recordPath: string) => {
    // The service runs plain `cairn save`; the wrapper points it at the test's directories.
    await writeFile(wrapper, `#!/bin/sh\nexec ${process.execPath} ${CLI} "$@" --upper ${upper} --data ${data} --boot-record ${recordPath}\n`);
    await chmod(wrapper, 0o755);
  };

  /**
   * The kernel's consoles as /sys/class/tty/console/active lists them (the
   * one behind /dev/console last), each a file in a directory standing in
   * for /dev: what the service writes to the serial port is read back there.
   */
  const consoles = async () => {
    const dir = s.path('dev');
    await mkdir(dir, { recursive: true });
    for (const c of ['ttyS0', 'tty0']) await writeFile(join(dir, c), '');
    await writeFile(s.path('active'), 'ttyS0 tty0\n');
    return { consoles: s.path('active'), console_dir: dir, serial: () => readFileSync(join(dir, 'ttyS0'), 'utf8'), screen: () => readFileSync(join(dir, 'tty0'), 'utf8') };
  };

  it('saves the session and says so on every console, its progress and its result; a failure recorded before is cleared', async () => {
    const rec = await record('default');
    await cairnFor(rec);
    await writeFile(join(data, DATA.saveFailed), 'The save at the shutdown of ... failed\n');
    const c = await consoles();
    const r = await service('cairn-save.initd', 'start', { cairn: wrapper, boot_record: rec, data_dir: data, consoles: c.consoles, console_dir: c.console_dir });
    expect(r.exitCode, r.out).toBe(0);
    expect(r.out).toMatch(/\* Saving this session to the stick/);
    expect(r.out).toMatch(/saved .* to .*upperfs\.squashfs/);
    expect(r.out).toMatch(/\[ ok \]/);
    expect(existsSync(join(data, 'upperfs.squashfs'))).toBe(true);
    // The serial port (not /dev/console here) shows the same.
    expect(c.serial()).toMatch(/cairn-save: Saving this session to the stick/);
    expect(c.serial()).toMatch(/squashing\.\.\.\n[\s\S]*verifying 100%/);
    expect(c.serial()).toMatch(/saved .* to .*upperfs\.squashfs/);
    expect(c.serial()).toMatch(/cairn-save: saved\n/);
    // /dev/console's own console gets it from OpenRC, once.
    expect(c.screen()).toBe('');
    expect(existsSync(join(data, DATA.saveFailed))).toBe(false);
  });

  it('a save that fails is recorded on the data partition, for the next login, and said on every console', async () => {
    const failing = s.path('failing-cairn');
    await writeFile(failing, '#!/bin/sh\necho "cairn: the data partition is full" >&2\nexit 75\n');
    await chmod(failing, 0o755);
    const rec = await record('default');
    const c = await consoles();
    const r = await service('cairn-save.initd', 'start', { cairn: failing, boot_record: rec, data_dir: data, consoles: c.consoles, console_dir: c.console_dir });
    expect(r.exitCode).not.toBe(0);
    expect(r.out).toMatch(/the data partition is full/);
    expect(c.serial()).toMatch(/the data partition is full/);
    expect(c.serial()).toMatch(/cairn-save: THE SAVE FAILED \(cairn save exited 75\)/);
    expect(readFileSync(join(data, DATA.saveFailed), 'utf8')).toMatch(/^The save at the shutdown of \d{4}-\d\d-\d\d \d\d:\d\d failed \(cairn save exited 75\)/);
  });

  it('saves nothing after a clean boot the user picked', async () => {
    const before = statSync(join(data, 'upperfs.squashfs')).ino;
    const rec = await record('clean');
    await cairnFor(rec);
    const r = await service('cairn-save.initd', 'start', { cairn: wrapper, boot_record: rec, data_dir: data });
    expect(r.exitCode).toBe(0);
    expect(r.out).toMatch(/booted clean: nothing is saved/);
    expect(statSync(join(data, 'upperfs.squashfs')).ino).toBe(before);
  });

  it.each([
    ['reset the stick', 'reset', 'this session reset the stick'],
    ['restored a backup', 'restore', 'this session restored a backup onto the stick'],
  ])('saves nothing after the user %s in this session', async (_what, command, said) => {
    const resetData = await s.dataPartition(`data-${command}`, 32);
    const run = s.path(`${command}-session`);
    await mkdir(run, { recursive: true });
    const rec = join(run, 'boot');
    await writeFile(rec, 'requested=default\nused=default\nsession=x\n');
    const before = s.path(`${command}.backup`);
    rmSync(before, { force: true });
    if (command === 'restore') expect((await execa(process.execPath, [CLI, 'backup', before, '--data', resetData], { reject: false })).exitCode).toBe(0);
    const args = command === 'reset' ? ['reset', '--yes'] : ['restore', before, '--yes'];
    const done = await execa(process.execPath, [CLI, ...args, '--data', resetData, '--boot-record', rec], { reject: false });
    expect(done.exitCode, done.stderr).toBe(0);
    const resetWrapper = s.path(`cairn-${command}-session`);
    await writeFile(resetWrapper, `#!/bin/sh\nexec ${process.execPath} ${CLI} "$@" --upper ${upper} --data ${resetData} --boot-record ${rec}\n`);
    await chmod(resetWrapper, 0o755);
    const r = await service('cairn-save.initd', 'start', { cairn: resetWrapper, boot_record: rec, data_dir: resetData });
    expect(r.exitCode).toBe(0);
    expect(r.out).toContain(`${said}: nothing is saved`);
    expect(existsSync(join(resetData, 'upperfs.squashfs'))).toBe(false);
  });

  it('saves nothing outside a booted cairn system', async () => {
    const r = await service('cairn-save.initd', 'start', { cairn: wrapper, boot_record: s.path('no-record'), data_dir: data });
    expect(r.exitCode).toBe(0);
    expect(r.out).toMatch(/Not a booted cairn system/);
  });

  it('a save that hangs is stopped after save_timeout and the power-off goes on', async () => {
    // A stand-in for a hung save: the real one cannot be made to hang on demand.
    const hung = s.path('hung-cairn');
    await writeFile(hung, '#!/bin/sh\nexec sleep 60\n');
    await chmod(hung, 0o755);
    const rec = await record('default');
    const t = Date.now();
    const r = await service('cairn-save.initd', 'start', { cairn: hung, boot_record: rec, save_timeout: '1', data_dir: data });
    expect(Date.now() - t).toBeLessThan(10_000);
    expect(r.exitCode).not.toBe(0);
    expect(r.out).toMatch(/The save did not finish; the saved states are as they were/);
    expect(readFileSync(join(data, DATA.saveFailed), 'utf8')).toMatch(/failed \(cairn save did not finish within 1 s\)/);
  });
});

describe('cairn-readonly at power-off', () => {
  const s = new Scratch();
  afterAll(() => s.cleanup());

  /** The mount options of DIR, from /proc/self/mountinfo. */
  const mountOptions = (dir: string) => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')).find((f) => f[4] === dir)?.[5];
  /** Whether ext4's journal must be replayed at the next mount: what the next boot would run as recovery. */
  const needsRecovery = async (image: string) => /needs_recovery/.test((await execa('dumpe2fs', ['-h', image], { stderr: 'ignore' })).stdout);
  /** The loop devices bound to a file under DIR. */
  const loopsUnder = async (dir: string) => (await execa('losetup', ['--list', '--noheadings', '--output', 'NAME,BACK-FILE'])).stdout.split('\n').filter((l) => l.includes(`${dir}/`));

  it('after a real shutdown save, leaves the data partition read-only with its journal clean, and the save leaves no loop device bound to it', async () => {
    requireSystem(['mksquashfs', 'busybox', 'mkfs.ext4', 'losetup']);
    const data = await s.dataPartition('after-save', 64);
    const upper = s.path('upper');
    await mkdir(upper);
    await writeFile(join(upper, 'file'), 'saved at shutdown\n');
    const rec = s.path('boot');
    await writeFile(rec, 'requested=default\nused=default\nsession=x\n');
    const wrapper = s.path('cairn');
    await writeFile(wrapper, `#!/bin/sh\nexec ${process.execPath} ${CLI} "$@" --upper ${upper} --data ${data} --boot-record ${rec}\n`);
    await chmod(wrapper, 0o755);
    const saved = await service('cairn-save.initd', 'start', { cairn: wrapper, boot_record: rec, data_dir: data });
    expect(saved.exitCode, saved.out).toBe(0);
    expect(await loopsUnder(data)).toEqual([]);
    expect(await needsRecovery(s.path('after-save.img'))).toBe(true);
    const r = await service('cairn-readonly.initd', 'start', { data_dir: data });
    expect(r.exitCode, r.out).toBe(0);
    expect(r.out).toMatch(/\* Making the data partition .* read-only\n\[ ok \]/);
    expect(mountOptions(data)).toMatch(/^ro\b/);
    expect(await needsRecovery(s.path('after-save.img'))).toBe(false);
  });

  it('on Debian acts when OpenRC stops it (after umountfs), not when its "off" runlevel starts it', async () => {
    const data = await s.dataPartition('debian', 64);
    const started = await service('cairn-readonly.initd', 'start', { data_dir: data, readonly_at: 'stop' });
    expect(started.exitCode, started.out).toBe(0);
    expect(mountOptions(data)).toMatch(/^rw\b/);
    const stopped = await service('cairn-readonly.initd', 'stop', { data_dir: data, readonly_at: 'stop' });
    expect(stopped.exitCode, stopped.out).toBe(0);
    expect(mountOptions(data)).toMatch(/^ro\b/);
    expect(await needsRecovery(s.path('debian.img'))).toBe(false);
  });

  it('releases a loop device left bound read-write to a file on it, which kept the kernel from making it read-only', async () => {
    const data = await s.dataPartition('left-loop', 64);
    await execa('truncate', ['-s', '4M', join(data, 'upperfs.squashfs.tmp')]);
    const device = (await execa('losetup', ['--find', '--show', join(data, 'upperfs.squashfs.tmp')])).stdout.trim();
    try {
      // What OpenRC's mount-ro met: the kernel refuses, and no process holds a file there.
      expect((await execa('mount', ['-o', 'remount,ro', data], { reject: false })).exitCode).not.toBe(0);
      expect((await execa('busybox', ['fuser', '-m', data], { reject: false })).stdout.trim()).toBe('');
      const r = await service('cairn-readonly.initd', 'start', { data_dir: data });
      expect(r.exitCode, r.out).toBe(0);
      expect(r.out).toContain(`Releasing ${device}, still bound to ${data}/upperfs.squashfs.tmp`);
      expect(await loopsUnder(data)).toEqual([]);
      expect(mountOptions(data)).toMatch(/^ro\b/);
      expect(await needsRecovery(s.path('left-loop.img'))).toBe(false);
    } finally {
      await execa('losetup', ['--detach', device], { reject: false });
    }
  });

  it('names what still holds the data partition when it cannot be made read-only, and fails without stopping the power-off', async () => {
    const data = await s.dataPartition('held', 64);
    const inner = join(data, 'inner.img');
    await execa('truncate', ['-s', '8M', inner]);
    await execa('mkfs.ext4', ['-q', '-F', inner]);
    const mnt = s.path('inner');
    await mkdir(mnt);
    // A loop device in use (mounted read-write) is not the service's to release.
    await execa('mount', ['-o', 'loop', inner, mnt]);
    const device = (await execa('losetup', ['--associated', inner, '--noheadings', '--output', 'NAME'])).stdout.trim();
    try {
      const r = await service('cairn-readonly.initd', 'start', { data_dir: data });
      expect(r.exitCode).not.toBe(0);
      expect(r.out).toContain(`warning: ${device.replace('/dev/', '')} is bound read-write to ${inner}`);
      expect(r.out).toMatch(/stays writable: the next boot replays its journal/);
      expect(mountOptions(data)).toMatch(/^rw\b/);
    } finally {
      await execa('umount', [mnt]);
    }
  });
});

describe('the login notice (/etc/profile.d/cairn.sh)', () => {
  const s = new Scratch();
  afterAll(() => s.cleanup());

  it('says at login that the last shutdown save failed, and nothing once a save succeeded', async () => {
    const data = s.path('persist');
    await mkdir(data);
    // The notice reads the data partition's record; here a scratch directory stands in for /persist.
    const script = loginNotice().replaceAll(`${RUNTIME.dataDir}/`, `${data}/`);
    expect(script).toContain(`${data}/${DATA.saveFailed}`);
    const quiet = await execa('busybox', ['sh', '-c', script], { reject: false });
    expect(quiet.exitCode).toBe(0);
    expect(quiet.stderr + quiet.stdout).toBe('');
    await writeFile(join(data, DATA.saveFailed), 'The save at the shutdown of 2026-12-06 16:40 failed (cairn save exited 75): ...\n');
    const told = await execa('busybox', ['sh', '-c', script], { reject: false });
    expect(told.exitCode).toBe(0);
    expect(told.stderr).toMatch(/\*\*\* cairn: The save at the shutdown of 2026-12-06 16:40 failed \(cairn save exited 75\)/);
    expect(told.stderr).toMatch(/cairn save saves this session now/);
  });

  it('says at login, to an ordinary user, that states are held, and nothing once they are released', async () => {
    const data = s.path('persist-held');
    await mkdir(data, { mode: 0o711 });
    // As on a stick: others may pass through to the data partition, not list or read it.
    await chmod(dirname(data), 0o711);
    await chmod(data, 0o711);
    const script = loginNotice().replaceAll(`${RUNTIME.dataDir}/`, `${data}/`);
    const asUser = () => execa('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', 'busybox', 'sh', '-c', script], { reject: false });
    expect((await asUser()).stderr).toBe('');
    await writeHeld(data, [
      { identity: 'id-a', reason: 'a boot fell back past it: upperfs.squashfs does not fit' },
      { identity: 'id-b', reason: 'a boot fell back past it: upperfs-backup.squashfs does not fit' },
    ]);
    const told = await asUser();
    expect(told.exitCode).toBe(0);
    expect(told.stderr).toMatch(/\*\*\* cairn: 2 saved state\(s\) could not be booted and are held/);
    // Released within the session: only the session's mark is left, and nothing is said.
    await writeHeld(data, [], 'boot-1');
    expect(readFileSync(join(data, DATA.held), 'utf8')).toMatch(/boot-1/);
    expect((await asUser()).stderr).toBe('');
  });
});

describe('the login notice of a data partition left read-only', () => {
  const s = new Scratch();
  afterAll(() => s.cleanup());

  it('says at login, to an ordinary user, that the data partition needs repair, and nothing after a clean check', async () => {
    const run = s.path('run');
    await mkdir(run, { recursive: true });
    await chmod(s.dir, 0o755);
    const record = join(run, 'boot');
    const script = loginNotice().replaceAll(RUNTIME.bootRecord, record);
    expect(script).toContain(record);
    const asUser = () => execa('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', 'busybox', 'sh', '-c', script], { reject: false });
    await writeFile(record, 'requested=default\nused=default\ndata_check=clean\n', { mode: 0o644 });
    expect((await asUser()).stderr).toBe('');
    await writeFile(record, 'requested=default\nused=default\ndata_check=errors left (e2fsck -p exited 4: ...); mounted read-only\n');
    const told = await asUser();
    expect(told.exitCode).toBe(0);
    expect(told.stderr).toMatch(/\*\*\* cairn: the data partition has errors the boot did not repair: it is mounted read-only and nothing is saved/);
  });
});

describe('cairn-boot-good', () => {
  const s = new Scratch();
  afterAll(() => s.cleanup());

  it('runs cairn boot good, and a failure of it never stops the boot', async () => {
    const calls = s.path('calls');
    const stand = s.path('cairn');
    // A stand-in for cairn: the real mark needs a stick's ESP (test/system/boot-counting.test.ts, and the VM).
    await writeFile(stand, `#!/bin/sh\necho "$@" >> '${calls}'\nexit \${CAIRN_EXIT:-0}\n`);
    await chmod(stand, 0o755);
    const ok = await service('cairn-boot-good.initd', 'start', { cairn: stand });
    expect(ok.exitCode, ok.out).toBe(0);
    expect(ok.out).toMatch(/\* Marking this boot good/);
    expect(readFileSync(calls, 'utf8')).toBe('boot good\n');
    const failed = await service('cairn-boot-good.initd', 'start', { cairn: stand }, 'export CAIRN_EXIT=1');
    expect(failed.exitCode).toBe(0);
    expect(failed.out).toMatch(/cairn boot good failed; GRUB still counts this boot as a try/);
  });

  it('comes after cairn\'s own services, and after local and sshd or the services /etc/conf.d/cairn-boot-good names', async () => {
    const afters = s.path('afters');
    const dep = async (prelude: string) => {
      await writeFile(afters, '');
      const r = await service('cairn-boot-good.initd', 'depend', {}, `after() { echo "$@" >> '${afters}'; }\n${prelude}`);
      expect(r.exitCode, r.out).toBe(0);
      return readFileSync(afters, 'utf8').trim();
    };
    expect(await dep('')).toBe('cairn-userdirs cairn-swap local sshd');
    expect(await dep("cairn_boot_good_after='local sshd kiosk'")).toBe('cairn-userdirs cairn-swap local sshd kiosk');
  });
});

describe('cairn-userdirs', () => {
  const s = new Scratch();
  afterAll(() => s.cleanup());

  it('links each entry of the user folder into the home, and never replaces an existing file', async () => {
    requireSystem(['busybox']);
    const home = s.path('home/alice');
    const persist = s.path('persist/user');
    await mkdir(join(persist, 'Music'), { recursive: true });
    await mkdir(home, { recursive: true });
    await writeFile(join(persist, 'notes.txt'), 'on the stick\n');
    await writeFile(join(persist, '.hidden'), 'dot\n');
    await writeFile(join(persist, 'clash'), 'stick version\n');
    await writeFile(join(home, 'clash'), 'home version\n');
    // The user database is the host's; getent is stood in for by the test user.
    const getent = `getent() { echo "alice:x:${process.getuid?.()}:${process.getgid?.()}::${home}:/bin/sh"; }`;
    const r = await service('cairn-userdirs.initd', 'start', { user: 'root', persist_dir: persist }, getent);
    expect(readlinkSync(join(home, 'Music'))).toBe(join(persist, 'Music'));
    expect(readlinkSync(join(home, 'notes.txt'))).toBe(join(persist, 'notes.txt'));
    expect(readlinkSync(join(home, '.hidden'))).toBe(join(persist, '.hidden'));
    expect(readFileSync(join(home, 'clash'), 'utf8')).toBe('home version\n');
    expect(r.out).toMatch(/clash exists: not replaced/);
    // A clash is the user's file winning: a warning, not a failed service.
    expect(r.exitCode).toBe(0);
    // Running again changes nothing and reports only the clash.
    const again = await service('cairn-userdirs.initd', 'start', { user: 'root', persist_dir: persist }, getent);
    expect(again.out.match(/warning/g)).toHaveLength(1);
  });
});

describe('cairn-swap', () => {
  const s = new Scratch();
  let swappiness = '';
  afterAll(async () => {
    await execa('swapoff', [join(s.dir, 'swapdata', 'swapfile')], { reject: false });
    if (swappiness) await writeFile('/proc/sys/vm/swappiness', swappiness);
    await s.cleanup();
  });

  it('creates a swap file on the data partition once, turns it on with low swappiness, and off again', async () => {
    requireSystem(['busybox', 'mkfs.ext4']);
    swappiness = readFileSync('/proc/sys/vm/swappiness', 'utf8').trim();
    const data = await s.dataPartition('swapdata', 64);
    const upper = await s.dataPartition('swapupper', 8);
    const vars = { swapfile: join(data, 'swapfile'), swap_size_mib: '16', swappiness: '7', upper_mount: upper };
    const on = await service('cairn-swap.initd', 'start', vars);
    expect(on.exitCode, on.out).toBe(0);
    expect(readFileSync('/proc/swaps', 'utf8')).toContain(join(data, 'swapfile'));
    expect(readFileSync('/proc/sys/vm/swappiness', 'utf8').trim()).toBe('7');
    expect(statSync(join(data, 'swapfile')).size).toBe(16 * 1024 * 1024);
    expect(existsSync(join(data, 'swapfile.new'))).toBe(false);
    const off = await service('cairn-swap.initd', 'stop', vars);
    expect(off.exitCode, off.out).toBe(0);
    expect(readFileSync('/proc/swaps', 'utf8')).not.toContain(join(data, 'swapfile'));
  });

  /** MiB free on the file system at DIR. */
  const freeMiB = async (dir: string) => Number((await execa('df', ['-Pk', dir])).stdout.split('\n')[1]!.trim().split(/\s+/)[3]) / 1024;

  it('on a small stick makes the swap file smaller, keeping room for a save of a full upper layer', async () => {
    const data = await s.dataPartition('swapsmall', 160);
    const upper = await s.dataPartition('swapsmallupper', 48);
    const keep = Number((await execa('df', ['-Pk', upper])).stdout.split('\n')[1]!.trim().split(/\s+/)[1]) / 1024;
    const vars = { swapfile: join(data, 'swapfile'), swap_size_mib: '512', upper_mount: upper };
    const on = await service('cairn-swap.initd', 'start', vars);
    expect(on.exitCode, on.out).toBe(0);
    const size = statSync(join(data, 'swapfile')).size / 1024 / 1024;
    expect(size).toBeLessThan(512);
    expect(size).toBeGreaterThanOrEqual(32);
    expect(await freeMiB(data)).toBeGreaterThanOrEqual(keep - 1);
    expect(on.out).toMatch(new RegExp(`Creating a ${size} MiB swap file`));
    await service('cairn-swap.initd', 'stop', vars);
  });

  it('makes no swap file where the stick has no room to spare, and says why', async () => {
    const data = await s.dataPartition('swaptiny', 64);
    const upper = await s.dataPartition('swaptinyupper', 64);
    const r = await service('cairn-swap.initd', 'start', { swapfile: join(data, 'swapfile'), swap_size_mib: '512', upper_mount: upper });
    expect(r.exitCode, r.out).toBe(0);
    expect(r.out).toMatch(/No swap on the stick: its free space is kept for saving sessions/);
    expect(existsSync(join(data, 'swapfile'))).toBe(false);
    expect(existsSync(join(data, 'swapfile.new'))).toBe(false);
  });

  it('leaves no half-made swap file behind when making it fails', async () => {
    const data = await s.dataPartition('swapfail', 64);
    const upper = await s.dataPartition('swapfailupper', 8);
    // mkswap failing stands in for any failure after the file was allocated.
    const r = await service('cairn-swap.initd', 'start', { swapfile: join(data, 'swapfile'), swap_size_mib: '16', upper_mount: upper }, 'mkswap() { return 1; }');
    expect(r.exitCode).not.toBe(0);
    expect(r.out).toMatch(/Could not create/);
    expect(existsSync(join(data, 'swapfile'))).toBe(false);
    expect(existsSync(join(data, 'swapfile.new'))).toBe(false);
  });

  it('swap_size_mib=0 turns it off without touching the stick', async () => {
    const r = await service('cairn-swap.initd', 'start', { swapfile: s.path('never'), swap_size_mib: '0' });
    expect(r.exitCode).toBe(0);
    expect(existsSync(s.path('never'))).toBe(false);
  });
});

describe('cairn-checkpoint', () => {
  const s = new Scratch();
  const loops: ReturnType<typeof execa>[] = [];
  afterAll(async () => {
    for (const l of loops) l.kill('SIGKILL');
    await s.cleanup();
  });
  const LOOP = resolve('openrc', 'cairn-checkpoint.loop');
  // What sh runs it: busybox's on Alpine, dash on Debian.
  const SHELLS: string[][] = [['busybox', 'sh'], ['dash']];

  /**
   * A stand-in for `cairn` on the path the service names: the real command
   * needs a booted stick's session. Each call adds a line to CALLS: its pid,
   * niceness and I/O class, and its arguments. With SLOW set it runs until
   * SIGTERM, then takes half a second to clean up and says so, as the real
   * checkpoint removes its temp file.
   */
  const standIn = async (name: string, exit = 0) => {
    const calls = s.path(`${name}.calls`);
    const path = s.path(`${name}-cairn`);
    await writeFile(
      path,
      `#!/bin/sh
# The clean-up is set before the call is recorded: the test stops the loop as soon as it sees the call.
[ -z "$SLOW" ] || trap 'sleep 0.5; echo "$$ cleaned up" >> "${calls}"; exit 143' TERM
echo "$$ nice=$(cut -d' ' -f19 /proc/$$/stat) io=$(ionice -p $$ | cut -d: -f1) $*" >> '${calls}'
echo "stand-in checkpoint says this"
echo "stand-in checkpoint complains" >&2
if [ -n "$SLOW" ]; then
	sleep 30 & wait
fi
exit ${exit}
`,
    );
    await chmod(path, 0o755);
    return { path, calls: () => (existsSync(calls) ? readFileSync(calls, 'utf8').split('\n').filter(Boolean) : []) };
  };

  /** Polls until WHAT holds, for up to MS milliseconds. */
  const until = async (what: () => boolean, ms: number, label: string) => {
    const end = Date.now() + ms;
    while (!what()) {
      if (Date.now() > end) throw new Error(`not within ${ms} ms: ${label}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  /** The loop as supervise-daemon runs it, with a minute of one second. */
  const startLoop = (name: string, cairn: string, shell: readonly string[], env: Record<string, string> = {}) => {
    const conf = s.path(`${name}.conf`);
    const log = s.path(`${name}-log`, 'cairn-checkpoint.log');
    const loop = execa(shell[0]!, [...shell.slice(1), LOOP], {
      env: { cairn, cairn_conf: conf, checkpoint_log: log, checkpoint_minute: '1', ...env },
      reject: false,
      all: true,
    });
    loops.push(loop);
    return { loop, conf, log: () => (existsSync(log) ? readFileSync(log, 'utf8') : '') };
  };

  it.each(SHELLS)('runs cairn checkpoint every checkpoint_interval minutes of cairn.conf, niced, idle for I/O, its words in the log (%s)', async (...shell: string[]) => {
    requireSystem(['busybox', 'dash', 'ionice', 'shellcheck', 'shfmt']);
    const cairn = await standIn(`every-${shell[0]}`);
    const { loop, conf, log } = startLoop(`every-${shell[0]}`, cairn.path, shell);
    // The last line wins, as cairn reads it; a commented one does not count.
    await writeFile(conf, '# checkpoint_interval=1\ncheckpoint_interval=7\ncheckpoint_interval = "02"\n');
    const t0 = Date.now();
    await until(() => cairn.calls().length >= 1, 6000, 'a first checkpoint');
    const first = Date.now() - t0;
    await until(() => cairn.calls().length >= 2, 6000, 'a second checkpoint');
    const second = Date.now() - t0;
    // Two "minutes" (seconds here) before the first and between the two.
    expect(first).toBeGreaterThanOrEqual(1900);
    expect(second - first).toBeGreaterThanOrEqual(1900);
    for (const call of cairn.calls()) expect(call).toMatch(/^\d+ nice=10 io=idle checkpoint --wait 0 --progress lines$/);
    expect(log()).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d cairn-checkpoint: a checkpoint every 2 minutes$/m);
    expect(log()).toContain('stand-in checkpoint says this\nstand-in checkpoint complains\n');
    loop.kill('SIGTERM');
    const done = await loop;
    expect(done.exitCode).toBe(0);
    // Never the console.
    expect(done.all).toBe('');
  });

  it('checkpoint_interval=0 turns the timer off and a number on again, read every minute without a restart; a bad value rests it', async () => {
    const cairn = await standIn('off');
    const { loop, conf, log } = startLoop('off', cairn.path, ['busybox', 'sh']);
    await writeFile(conf, 'checkpoint_interval=1\n');
    await until(() => cairn.calls().length >= 1, 4000, 'a checkpoint');
    await writeFile(conf, 'checkpoint_interval=0\n');
    await until(() => /the timer is off/.test(log()), 3000, 'the timer said off');
    const before = cairn.calls().length;
    await new Promise((r) => setTimeout(r, 3000));
    expect(cairn.calls().length).toBe(before);
    await writeFile(conf, 'checkpoint_interval=ten\n');
    await until(() => /checkpoint_interval=ten is not a whole number of minutes from 0 to 1440: no checkpoints until it is/.test(log()), 3000, 'the bad value said');
    await new Promise((r) => setTimeout(r, 2500));
    expect(cairn.calls().length).toBe(before);
    await writeFile(conf, 'checkpoint_interval=1\n');
    await until(() => cairn.calls().length > before, 4000, 'a checkpoint once turned on again');
    expect(log()).toMatch(/a checkpoint every 1 minutes/);
    loop.kill('SIGTERM');
    expect((await loop).exitCode).toBe(0);
  });

  it('a checkpoint that is refused (another save runs) is logged with its status, and the next round tries again', async () => {
    const cairn = await standIn('refused', 75);
    const { loop, conf, log } = startLoop('refused', cairn.path, ['busybox', 'sh']);
    await writeFile(conf, 'checkpoint_interval=1\n');
    await until(() => cairn.calls().length >= 2, 6000, 'two tries');
    expect(log()).toMatch(/stand-in checkpoint complains\n.* cairn-checkpoint: cairn checkpoint exited 75\n/);
    loop.kill('SIGTERM');
    expect((await loop).exitCode).toBe(0);
  });

  it('without ionice (a busybox without it) the checkpoint still runs, niced', async () => {
    const cairn = await standIn('no-ionice');
    const { loop, conf } = startLoop('no-ionice', cairn.path, ['busybox', 'sh'], { ionice: '/nonexistent/ionice' });
    await writeFile(conf, 'checkpoint_interval=1\n');
    await until(() => cairn.calls().length >= 1, 4000, 'a checkpoint');
    expect(cairn.calls()[0]).toMatch(/^\d+ nice=10 io=(none|best-effort) checkpoint --wait 0 --progress lines$/);
    loop.kill('SIGTERM');
    expect((await loop).exitCode).toBe(0);
  });

  /** The processes PID started that still run. */
  const children = (pid: number) => readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  /** The program name of PID, empty once it has ended. */
  const commOf = (pid: number) => {
    try {
      return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    } catch {
      return '';
    }
  };

  it.each(SHELLS)('SIGTERM (the service stopped) ends the loop at once between checkpoints, leaving no process behind (%s)', async (...shell: string[]) => {
    const cairn = await standIn(`idle-${shell[0]}`);
    // A real minute: the loop is in the middle of a pause when stopped.
    const { loop, conf, log } = startLoop(`idle-${shell[0]}`, cairn.path, shell, { checkpoint_minute: '60' });
    await writeFile(conf, 'checkpoint_interval=10\n');
    await until(() => /a checkpoint every 10 minutes/.test(log()), 3000, 'the loop started');
    // Pausing: its one child is sleep itself. A child forked a moment ago
    // may still be the shell, with the shell's handler for SIGTERM until it
    // execs sleep, and a SIGTERM sent to it then is lost (on a loaded
    // machine, twice in a row, the loop then waited out the whole pause).
    await until(() => children(loop.pid!).length === 1 && commOf(children(loop.pid!)[0]!) === 'sleep', 3000, 'the loop pausing');
    const [pause] = children(loop.pid!);
    const t = Date.now();
    loop.kill('SIGTERM');
    // Where the loop waits, should it not end (once seen to wait out execa's 5 s).
    let wchan = 'nowhere: it had ended';
    const peek = setTimeout(() => {
      try {
        wchan = `${readFileSync(`/proc/${loop.pid}/wchan`, 'utf8')} (${readFileSync(`/proc/${loop.pid}/status`, 'utf8').split('\n').filter((l) => /^Sig|^ShdPnd/.test(l)).join(', ')})`;
      } catch {
        // ended meanwhile
      }
    }, 1500);
    const ended = await loop;
    const took = Date.now() - t;
    clearTimeout(peek);
    expect(ended.exitCode, `ended by ${ended.signal} after ${took} ms, in ${wchan} 1.5 s after SIGTERM; its log:\n${log()}`).toBe(0);
    expect(took).toBeLessThan(1000);
    expect(existsSync(`/proc/${pause}`)).toBe(false);
    // The pause it ended is not a line of its own.
    expect(log()).toMatch(/cairn-checkpoint: a checkpoint every 10 minutes\n.* cairn-checkpoint: stopped\n$/);
    expect(cairn.calls()).toEqual([]);
  });

  it('a pause that missed the SIGTERM (sent before it became sleep) is ended all the same, at once (dash)', async () => {
    // The signal lost in the window between the loop's fork and the exec of
    // sleep, made certain: a stand-in sleep on the PATH that ignores SIGTERM
    // and then is the real one. Under dash only: busybox sh runs its own
    // sleep applet whatever the PATH holds (the loop's code is the same).
    const shell = ['dash'];
    const bin = s.path(`deaf-${shell[0]}-bin`);
    await mkdir(bin, { recursive: true });
    await writeFile(join(bin, 'sleep'), "#!/bin/sh\ntrap '' TERM\nexec /bin/sleep \"$@\"\n");
    await chmod(join(bin, 'sleep'), 0o755);
    const cairn = await standIn(`deaf-${shell[0]}`);
    const { loop, conf, log } = startLoop(`deaf-${shell[0]}`, cairn.path, shell, { checkpoint_minute: '60', PATH: `${bin}:${process.env.PATH}` });
    await writeFile(conf, 'checkpoint_interval=10\n');
    await until(() => children(loop.pid!).length === 1 && commOf(children(loop.pid!)[0]!) === 'sleep', 3000, 'the loop pausing');
    const [pause] = children(loop.pid!);
    // The stand-in works: the pause ignores SIGTERM (signal 15, bit 14 of the mask).
    const ignored = /^SigIgn:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pause}/status`, 'utf8'))![1]!;
    expect(BigInt(`0x${ignored}`) & (1n << 14n)).toBe(1n << 14n);
    const t = Date.now();
    loop.kill('SIGTERM');
    const ended = await loop;
    expect(ended.exitCode, `ended by ${ended.signal} after ${Date.now() - t} ms; its log:\n${log()}`).toBe(0);
    expect(Date.now() - t).toBeLessThan(1000);
    expect(existsSync(`/proc/${pause}`)).toBe(false);
    expect(log()).toMatch(/cairn-checkpoint: stopped\n$/);
  });

  it.each(SHELLS)('SIGTERM in the middle of a checkpoint stops it with SIGTERM and waits for its clean-up before the loop ends (%s)', async (...shell: string[]) => {
    const cairn = await standIn(`busy-${shell[0]}`);
    const { loop, conf, log } = startLoop(`busy-${shell[0]}`, cairn.path, shell, { SLOW: '1' });
    await writeFile(conf, 'checkpoint_interval=1\n');
    await until(() => cairn.calls().length === 1, 4000, 'a checkpoint running');
    const pid = Number(cairn.calls()[0]!.split(' ')[0]);
    const t = Date.now();
    loop.kill('SIGTERM');
    expect((await loop).exitCode).toBe(0);
    // Its clean-up took half a second, and the loop waited for it, no longer.
    expect(Date.now() - t).toBeGreaterThanOrEqual(450);
    expect(Date.now() - t).toBeLessThan(3000);
    expect(cairn.calls()[1]).toBe(`${pid} cleaned up`);
    expect(existsSync(`/proc/${pid}`)).toBe(false);
    expect(log()).toMatch(/cairn-checkpoint: stopped\n$/);
  });

  /** The service's start() with supervise-daemon stood in for: it runs the loop's command line as the supervisor would and records what it got. */
  const startService = async (name: string, requested: string | undefined) => {
    const record = s.path(`${name}.boot`);
    if (requested) await writeFile(record, `requested=${requested}\nused=${requested}\nsession=x\n`);
    const got = s.path(`${name}.supervised`);
    const prelude = `default_start() { echo "supervisor=$supervisor command=$command pidfile=$pidfile retry=$retry" > '${got}'; env | grep -E '^(cairn|cairn_conf|checkpoint_log|checkpoint_minute)=' | sort >> '${got}'; }`;
    const r = await service('cairn-checkpoint.initd', 'start', { boot_record: record, checkpoint_log: s.path(`${name}.log`), cairn_conf: s.path(`${name}.conf`) }, prelude);
    return { ...r, supervised: existsSync(got) ? readFileSync(got, 'utf8') : undefined };
  };

  it('starts the loop under supervise-daemon on a default boot, with its settings in the environment', async () => {
    const r = await startService('default', 'default');
    expect(r.exitCode, r.out).toBe(0);
    expect(r.supervised).toBe(
      [
        'supervisor=supervise-daemon command=/usr/lib/cairn/checkpoint-loop pidfile=/run/cairn-checkpoint.pid retry=TERM/30/KILL/5',
        'cairn=/usr/bin/cairn',
        `cairn_conf=${s.path('default.conf')}`,
        `checkpoint_log=${s.path('default.log')}`,
        'checkpoint_minute=60',
        '',
      ].join('\n'),
    );
  });

  it('starts nothing on a clean boot the user picked, nor outside a booted cairn system', async () => {
    const clean = await startService('clean', 'clean');
    expect(clean.exitCode).toBe(0);
    expect(clean.out).toMatch(/\* This session booted clean: no checkpoints/);
    expect(clean.supervised).toBeUndefined();
    const none = await startService('none', undefined);
    expect(none.exitCode).toBe(0);
    expect(none.out).toMatch(/Not a booted cairn system .*: no checkpoints/);
    expect(none.supervised).toBeUndefined();
    // Its stop then has nothing to stop, and says nothing.
    const stopped = await service('cairn-checkpoint.initd', 'stop', { pidfile: s.path('no-such.pid') }, 'default_stop() { echo "default_stop called"; }');
    expect(stopped.exitCode).toBe(0);
    expect(stopped.out).not.toContain('default_stop called');
  });

  it('starts once the system is up, and before the shutdown save', async () => {
    const deps = s.path('deps');
    const r = await service('cairn-checkpoint.initd', 'depend', {}, `after() { echo "after $*" >> '${deps}'; }\nbefore() { echo "before $*" >> '${deps}'; }`);
    expect(r.exitCode, r.out).toBe(0);
    expect(readFileSync(deps, 'utf8')).toBe('after cairn-boot-good\nbefore cairn-save\n');
  });
});
