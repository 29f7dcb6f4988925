/**
 * Which kernel modules an initramfs carries: dependencies from modules.dep,
 * built-in modules skipped, soft dependencies by name or alias, and the
 * index files cut down to what is carried. On a fake modules tree.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bootModules } from '../../src/initramfs/bootModules.js';
import {
  moduleIndexFiles,
  moduleName,
  parseModulesSoftdep,
  readModuleIndex,
  selectModules,
} from '../../src/initramfs/modules.js';
import { ModuleMissingError, ModulesTreeMissingError } from '../../src/lib/errors.js';

const KVER = '9.9.9-test';
const roots: string[] = [];

afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

/** A modules tree with index files as depmod writes them (module files themselves are not read here). */
function fakeTree(files: Record<string, string>, layout = 'lib/modules'): string {
  const root = mkdtempSync(join(tmpdir(), 'cairn-modules-'));
  roots.push(root);
  const tree = join(root, layout, KVER);
  mkdirSync(tree, { recursive: true });
  for (const [name, text] of Object.entries(files)) writeFileSync(join(tree, name), text);
  return root;
}

const DEP = [
  'kernel/drivers/md/dm-crypt.ko: kernel/drivers/md/dm-mod.ko',
  'kernel/drivers/md/dm-mod.ko:',
  'kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko',
  'kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko',
  'kernel/drivers/virtio/virtio_ring.ko:',
  'kernel/fs/squashfs/squashfs.ko:',
  'kernel/fs/overlayfs/overlay.ko:',
  'kernel/drivers/block/loop.ko:',
  'kernel/crypto/xts.ko:',
  'kernel/crypto/crc32c_generic.ko:',
  'kernel/fs/nls/nls_iso8859-1.ko:',
  'kernel/sound/unrelated.ko: kernel/sound/snd.ko',
  'kernel/sound/snd.ko:',
  '',
].join('\n');

const ALIAS = [
  '# Aliases extracted from modules themselves.',
  'alias crypto-xts xts',
  'alias virtio:d00000002v* virtio_blk',
  'alias fs-squashfs squashfs',
  'alias crypto-crc32c crc32c_generic',
  'alias pci:v00008086d* unrelated',
  '',
].join('\n');

const BUILTIN = 'kernel/fs/ext4/ext4.ko\nkernel/fs/mbcache.ko\n';

describe('moduleName', () => {
  it('is the file name without .ko or a compression suffix, with "-" as "_"', () => {
    expect(moduleName('kernel/drivers/md/dm-crypt.ko')).toBe('dm_crypt');
    expect(moduleName('kernel/fs/nls/nls_iso8859-1.ko.zst')).toBe('nls_iso8859_1');
    expect(moduleName('usb-storage')).toBe('usb_storage');
  });
});

describe('parseModulesSoftdep', () => {
  it('reads pre: and post: lists and the bare form', () => {
    const s = parseModulesSoftdep('# comment\nsoftdep ext4 pre: crc32c\nsoftdep cifs gcm\nsoftdep a pre: b post: c d\n');
    expect(Object.fromEntries(s)).toEqual({ ext4: ['crc32c'], cifs: ['gcm'], a: ['b', 'c', 'd'] });
  });
});

describe('selectModules', () => {
  it('carries what is asked for and everything modules.dep says it needs, and nothing else', async () => {
    const index = await readModuleIndex(fakeTree({ 'modules.dep': DEP, 'modules.alias': ALIAS, 'modules.builtin': BUILTIN }), KVER);
    const s = selectModules(index, { required: ['dm-crypt', 'ext4'], optional: ['virtio_blk', 'usb-storage'] });
    expect(s.paths).toEqual([
      'kernel/drivers/block/virtio_blk.ko',
      'kernel/drivers/md/dm-crypt.ko',
      'kernel/drivers/md/dm-mod.ko',
      'kernel/drivers/virtio/virtio.ko',
      'kernel/drivers/virtio/virtio_ring.ko',
    ]);
    expect(s.builtin).toEqual(['ext4']);
    expect(s.absent).toEqual(['usb_storage']);
  });

  it('fails naming a required module the kernel has neither as a file nor built in', async () => {
    const index = await readModuleIndex(fakeTree({ 'modules.dep': DEP, 'modules.alias': ALIAS, 'modules.builtin': BUILTIN }), KVER);
    let error: unknown;
    try {
      selectModules(index, { required: ['squashfs', 'zfs'], optional: [] });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ModuleMissingError);
    expect(error).toMatchObject({ module: 'zfs', kernelVersion: KVER, code: 'MODULE_MISSING' });
    expect((error as Error).message).toBe(`kernel ${KVER} has no module zfs, neither as a file nor built in`);
  });

  it('fails naming a dependency that modules.dep lists but does not describe', async () => {
    const index = await readModuleIndex(
      fakeTree({ 'modules.dep': 'kernel/a.ko: kernel/gone.ko\n', 'modules.alias': '' }),
      KVER,
    );
    expect(() => selectModules(index, { required: ['a'], optional: [] })).toThrow(/has no module gone \(needed by a/);
  });

  it('carries soft dependencies named by module or by alias, when the kernel has them', async () => {
    const softdep = 'softdep squashfs pre: crypto-crc32c\nsoftdep overlay post: xts nothere\n';
    const index = await readModuleIndex(
      fakeTree({ 'modules.dep': DEP, 'modules.alias': ALIAS, 'modules.softdep': softdep }),
      KVER,
    );
    const s = selectModules(index, { required: ['squashfs', 'overlay'], optional: [] });
    expect([...s.names].sort()).toEqual(['crc32c_generic', 'overlay', 'squashfs', 'xts']);
  });

  it('finds the tree under usr/lib/modules too', async () => {
    const index = await readModuleIndex(fakeTree({ 'modules.dep': DEP, 'modules.alias': ALIAS }, 'usr/lib/modules'), KVER);
    expect(index.tree).toMatch(/usr\/lib\/modules\/9\.9\.9-test$/);
  });

  it('asks for what the early boot needs: the required four, dm-crypt only with LUKS', () => {
    expect(bootModules({ luks: false }).required).toEqual(['squashfs', 'overlay', 'loop', 'ext4']);
    expect(bootModules({ luks: true, extra: ['nvme'] }).required).toEqual(['squashfs', 'overlay', 'loop', 'ext4', 'dm-crypt', 'nvme']);
    expect(bootModules({ luks: false }).optional).toEqual(expect.arrayContaining(['zram', 'virtio_blk', 'usb-storage', 'uas', 'xhci_pci', 'vfat', 'nls_cp437']));
  });
});

describe('readModuleIndex', () => {
  it('fails naming the kernel version and the directory when there is no modules tree', async () => {
    const root = mkdtempSync(join(tmpdir(), 'cairn-modules-'));
    roots.push(root);
    const e = await readModuleIndex(root, KVER).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ModulesTreeMissingError);
    expect(e).toMatchObject({ root, kernelVersion: KVER });
    expect((e as Error).message).toContain(`no kernel modules for ${KVER} under ${root}`);
  });

  it('fails with depmod as the remedy when the tree has no modules.dep', async () => {
    const root = fakeTree({ 'modules.builtin': BUILTIN });
    const e = await readModuleIndex(root, KVER).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ModulesTreeMissingError);
    expect((e as Error).message).toContain('modules.dep is missing');
    expect((e as ModulesTreeMissingError).hint).toBe(`run depmod -b ${root} ${KVER} (a kernel package's install does this)`);
  });
});

describe('moduleIndexFiles', () => {
  it('cuts modules.dep, modules.alias, modules.softdep and modules.order down to the carried modules, and keeps modules.builtin', async () => {
    const order = 'kernel/sound/snd.ko\nkernel/drivers/virtio/virtio_ring.ko\nkernel/drivers/virtio/virtio.ko\nkernel/drivers/block/virtio_blk.ko\n';
    const softdep = 'softdep virtio_blk pre: virtio_ring\nsoftdep snd pre: soundcore\n';
    const index = await readModuleIndex(
      fakeTree({ 'modules.dep': DEP, 'modules.alias': ALIAS, 'modules.builtin': BUILTIN, 'modules.order': order, 'modules.softdep': softdep }),
      KVER,
    );
    const files = await moduleIndexFiles(index, selectModules(index, { required: ['virtio_blk'], optional: [] }));
    const text = (n: string) => files.get(n)?.toString();
    expect(text('modules.dep')).toBe(
      [
        'kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko',
        'kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko',
        'kernel/drivers/virtio/virtio_ring.ko:',
        '',
      ].join('\n'),
    );
    expect(text('modules.alias')).toBe('alias virtio:d00000002v* virtio_blk\n');
    expect(text('modules.order')).toBe('kernel/drivers/virtio/virtio_ring.ko\nkernel/drivers/virtio/virtio.ko\nkernel/drivers/block/virtio_blk.ko\n');
    expect(text('modules.softdep')).toBe('softdep virtio_blk pre: virtio_ring\n');
    expect(text('modules.builtin')).toBe(BUILTIN);
  });
});
