import { describe, it, expect } from 'vitest';
import { classify, DEFAULT_CLASS_RULES, globMatch, kernelReleasesIn, parseClassRule } from '../../src/apk/classify.js';
import { parseApkChanges, specialChanges, writesPackage } from '../../src/apk/simulate.js';
import { UsageError } from '../../src/lib/errors.js';

describe('classify', () => {
  it.each([
    ['linux-lts', 'kernel'],
    ['linux-virt', 'kernel'],
    ['linux-edge', 'kernel'],
    ['linux-rpi', 'kernel'],
    ['linux-stable', 'kernel'],
    ['linux-firmware', 'firmware'],
    ['linux-firmware-intel', 'firmware'],
    ['linux-firmware-none', 'firmware'],
    ['linux-firmware-any', 'firmware'],
    ['grub', 'grub'],
    ['grub-efi', 'grub'],
    ['grub-bios', 'grub'],
    ['mkinitfs', 'mkinitfs'],
  ])('%s is %s', (name, cls) => {
    expect(classify(name)).toBe(cls);
  });

  it.each([
    'linux-headers',
    'linux-tools',
    'linux-tools-perf',
    'linux-pam',
    'linux-pam-dev',
    'linux-lts-dev',
    'linux-virt-dev',
    'linux-lts-doc',
    'linux-timemachine',
    'grub-doc',
    'mkinitfs-doc',
    'busybox',
    'linux',
    'util-linux',
    'alpine-base',
  ])('%s is ordinary', (name) => {
    expect(classify(name)).toBeUndefined();
  });

  it('takes other rules, first match winning', () => {
    const rules = [parseClassRule('kernel', 'linux-* !linux-firmware* !linux-*-dev'), parseClassRule('firmware', 'linux-firmware*')];
    expect(rules[0]).toEqual({ class: 'kernel', include: ['linux-*'], exclude: ['linux-firmware*', 'linux-*-dev'] });
    expect(classify('linux-lts', rules)).toBe('kernel');
    expect(classify('linux-pam', rules)).toBe('kernel'); // these rules did not exclude it
    expect(classify('linux-firmware-amd', rules)).toBe('firmware');
    expect(classify('grub', rules)).toBeUndefined();
    expect(() => parseClassRule('grub', 'grub /etc/passwd')).toThrow(UsageError);
  });

  it('globs match whole names, * any run, other characters literally', () => {
    expect(globMatch('linux-*', 'linux-lts')).toBe(true);
    expect(globMatch('linux-*', 'xlinux-lts')).toBe(false);
    expect(globMatch('a.b', 'axb')).toBe(false);
    expect(globMatch('gtk+3*', 'gtk+3.0')).toBe(true);
  });

  it('the default rules give each class once', () => {
    const classes = DEFAULT_CLASS_RULES.map((r) => r.class);
    expect(new Set(classes).size).toBe(classes.length);
  });
});

describe('kernelReleasesIn', () => {
  const f = (name: string) => ({ name, type: 'file' as const });
  it('finds the <kver> of lib/modules/<kver> holding modules', () => {
    expect(
      kernelReleasesIn([
        { name: 'lib/modules/6.6.52-0-lts', type: 'directory' },
        f('lib/modules/6.6.52-0-lts/kernel/fs/squashfs/squashfs.ko.gz'),
        f('lib/modules/6.6.52-0-lts/modules.dep'),
        f('lib/modules/6.6.52-0-virt/kernel/drivers/block/loop.ko'),
        f('lib/modules/6.6.52-0-virt/kernel/drivers/block/zram.ko.zst'),
        f('boot/vmlinuz-lts'),
      ]),
    ).toEqual(['6.6.52-0-lts', '6.6.52-0-virt']);
  });
  it('a -dev package with only the build symlink ships no modules', () => {
    expect(kernelReleasesIn([{ name: 'lib/modules/6.6.52-0-lts/build', type: 'symlink' }])).toEqual([]);
  });
});

describe('parseApkChanges', () => {
  // From apk-tools v2.14.4, test/upgrade1.test (@EXPECT block), verbatim.
  const upgrade1 = '(1/3) Purging libold (1)\n(2/3) Installing libnew (1)\n(3/3) Upgrading app (1 -> 2)\nOK: 0 MiB in 2 packages\n';
  // From apk-tools v2.14.4, test/pinning8.test, verbatim.
  const pinning8 = '(1/3) Downgrading b (3 -> 2)\n(2/3) Upgrading a@testing (3 -> 3.1)\n(3/3) Upgrading c@testing (3 -> 3.1)\nOK: 0 MiB in 3 packages\n';
  // From apk-tools v2.14.4, test/pinning7.test and test/basic5.test, verbatim.
  const pinning7 = '(1/2) Updating pinning a@testing2 (3)\n(2/2) Updating pinning c@testing2 (3)\nOK: 0 MiB in 3 packages\n';
  const basic5 = '(1/2) Replacing b (2 -> 2)\n(2/2) Replacing a (2 -> 2)\nOK: 0 MiB in 2 packages\n';
  // From apk-tools v2.14.4, test/selfupgrade2.test, verbatim.
  const selfupgrade2 =
    'Upgrading critical system libraries and apk-tools:\n(1/3) Purging application (1)\n(2/3) Upgrading libcrypto (1 -> 2)\n(3/3) Upgrading apk-tools (1 -> 2)\n';

  it('reads every kind of change line print_change writes', () => {
    expect(parseApkChanges(upgrade1)).toEqual([
      { action: 'purge', name: 'libold', version: '1', step: 1, total: 3 },
      { action: 'install', name: 'libnew', version: '1', step: 2, total: 3 },
      { action: 'upgrade', name: 'app', version: '2', oldVersion: '1', step: 3, total: 3 },
    ]);
    expect(parseApkChanges(pinning8)).toEqual([
      { action: 'downgrade', name: 'b', version: '2', oldVersion: '3', step: 1, total: 3 },
      { action: 'upgrade', name: 'a', tag: 'testing', version: '3.1', oldVersion: '3', step: 2, total: 3 },
      { action: 'upgrade', name: 'c', tag: 'testing', version: '3.1', oldVersion: '3', step: 3, total: 3 },
    ]);
    expect(parseApkChanges(pinning7).map((c) => [c.action, c.name, c.tag, c.version])).toEqual([
      ['repin', 'a', 'testing2', '3'],
      ['repin', 'c', 'testing2', '3'],
    ]);
    expect(parseApkChanges(basic5).map((c) => [c.action, c.name, c.oldVersion, c.version])).toEqual([
      ['replace', 'b', '2', '2'],
      ['replace', 'a', '2', '2'],
    ]);
    expect(parseApkChanges(selfupgrade2).map((c) => `${c.action} ${c.name}`)).toEqual([
      'purge application',
      'upgrade libcrypto',
      'upgrade apk-tools',
    ]);
  });

  it('reads reinstalls, skipped ones, and names like .virtual', () => {
    // The first and third lines from apk-tools v2.14.4 test/fix5.test and test/basic8.test (there
    // "(1/1) Reinstalling a (1)" and "(1/1) Installing .virtual (20190603.131426)"); the second is
    // written in commit.c print_change's format for a package whose .apk is gone.
    const text = '(1/3) Reinstalling a (1)\n(2/3) [APK unavailable, skipped] Reinstalling b (1)\n(3/3) Installing .virtual (20190603.131426)\n';
    const changes = parseApkChanges(text);
    expect(changes.map((c) => [c.action, c.name, c.version, c.skipped])).toEqual([
      ['reinstall', 'a', '1', undefined],
      ['reinstall', 'b', '1', true],
      ['install', '.virtual', '20190603.131426', undefined],
    ]);
    expect(changes.map(writesPackage)).toEqual([true, false, true]);
  });

  it("reads apk-tools 3's padded steps: ( 1/12) up to ( 9/12), then (10/12)", () => {
    // Captured from the real apk-tools 3.0.6 (commit.c print_change: "(%*i/%i)"), on a local
    // repository of packages written by src/apk/write.ts:
    //   apk --root R add --simulate linux-firmware-intel grub tool0 ... tool9
    const lines = [
      '( 1/12) Installing grub (2.12-r1)',
      '( 2/12) Installing linux-firmware-intel (20231111-r1)',
      ...Array.from({ length: 10 }, (_, i) => `${String(i + 3).padStart(2)}/12`).map((s, i) => `(${s}) Installing tool${i} (1.0-r0)`),
      'OK: 3136 B in 14 packages',
    ];
    expect(lines[9]).toBe('(10/12) Installing tool7 (1.0-r0)');
    const changes = parseApkChanges(`${lines.join('\n')}\n`);
    expect(changes).toHaveLength(12);
    expect(changes.slice(0, 2)).toEqual([
      { action: 'install', name: 'grub', version: '2.12-r1', step: 1, total: 12 },
      { action: 'install', name: 'linux-firmware-intel', version: '20231111-r1', step: 2, total: 12 },
    ]);
    expect(specialChanges(changes).map((c) => [c.class, c.name])).toEqual([
      ['grub', 'grub'],
      ['firmware', 'linux-firmware-intel'],
    ]);
    const tagged = parseApkChanges('( 3/10) Upgrading linux-lts@edge (6.6.1-r0 -> 6.6.2-r0)\n( 4/10) [APK unavailable, skipped] Reinstalling grub (2.12-r1)\n');
    expect(tagged.map((c) => [c.step, c.action, c.name, c.tag, c.oldVersion, c.version, c.skipped])).toEqual([
      [3, 'upgrade', 'linux-lts', 'edge', '6.6.1-r0', '6.6.2-r0', undefined],
      [4, 'reinstall', 'grub', undefined, undefined, '2.12-r1', true],
    ]);
  });

  it('passes over lines that are not changes', () => {
    const text =
      'fetch https://dl-cdn.alpinelinux.org/alpine/v3.20/main/x86_64/APKINDEX.tar.gz\n' +
      'WARNING: opening /unsignedrepo: UNTRUSTED signature\n' +
      'Executing busybox-1.36.1-r29.trigger\n' +
      'ERROR: unable to select packages:\n  (1/2) not a change\nOK: 8 MiB in 17 packages\n';
    expect(parseApkChanges(text)).toEqual([]);
  });
});

describe('specialChanges', () => {
  // Captured by hand from the real apk-tools 2.14.4 (alpine-minirootfs-3.20.3, chroot) on a local
  // repository of packages written by src/apk/write.ts, index signed by src/apk/sign.ts:
  //   apk add --simulate --repositories-file /dev/null --repository /localrepo linux-cairn cairn-hello-sha1
  const addSimulate =
    '(1/3) Installing cairn-hello-sha1 (1.0-r0)\n(2/3) Installing linux-firmware-cairn (20240811-r0)\n' +
    '(3/3) Installing linux-cairn (6.6.52-r0)\nOK: 8 MiB in 15 packages\n';
  //   apk upgrade --simulate --available --repositories-file /dev/null --repository /localrepo
  const upgradeSimulate =
    '(1/4) Purging ssl_client (1.36.1-r29)\n(2/4) Upgrading linux-firmware-cairn (20240811-r0 -> 20240901-r0)\n' +
    '(3/4) Installing mkinitfs (3.10.1-r0)\n(4/4) Upgrading linux-cairn (6.6.52-r0 -> 6.6.53-r0)\nOK: 8 MiB in 17 packages\n';

  it('finds the special packages a transaction installs, dependencies included', () => {
    expect(specialChanges(parseApkChanges(addSimulate)).map((c) => [c.class, c.name, c.action, c.version])).toEqual([
      ['firmware', 'linux-firmware-cairn', 'install', '20240811-r0'],
      ['kernel', 'linux-cairn', 'install', '6.6.52-r0'],
    ]);
    expect(specialChanges(parseApkChanges(upgradeSimulate)).map((c) => [c.class, c.name, c.oldVersion, c.version])).toEqual([
      ['firmware', 'linux-firmware-cairn', '20240811-r0', '20240901-r0'],
      ['mkinitfs', 'mkinitfs', undefined, '3.10.1-r0'],
      ['kernel', 'linux-cairn', '6.6.52-r0', '6.6.53-r0'],
    ]);
  });

  it('leaves out purges and repins: they write no package files', () => {
    const text =
      '(1/4) Purging linux-lts (6.6.50-r0)\n(2/4) Updating pinning grub@edge (2.12-r5)\n' +
      '(3/4) Installing linux-virt@edge (6.6.52-r0)\n(4/4) Reinstalling grub-efi (2.12-r5)\n';
    expect(specialChanges(parseApkChanges(text)).map((c) => [c.class, c.name, c.tag, c.action])).toEqual([
      ['kernel', 'linux-virt', 'edge', 'install'],
      ['grub', 'grub-efi', undefined, 'reinstall'],
    ]);
  });
});
