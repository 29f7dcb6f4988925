/**
 * Choosing the saved state: seals checked with busybox tools as
 * docs/state-format.md says, and the fallbacks default -> backup -> clean
 * (gen-<n> -> clean), on real ext4 data partitions on loop devices, found by
 * label and mounted by the library. The chosen state is unpacked into a
 * tmpfs upper layer and the boot record written, as at boot.
 */
import { createHash } from 'node:crypto';
import { execa } from 'execa';
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkIntegrity } from '../../../src/state/seal.js';
import { keyValues, requireRoot, requireTools } from '../../helpers/initramfs-env.js';
import { bitFlippedCopy, buildState, dataPartition, KVER, mksquashfs, Sandbox, truncatedCopy } from './fixtures.js';
import { SEAL_MAGIC, SEAL_SIZE, type SealFields } from './seal.js';

let sb: Sandbox;
/** Image files by what they are, to be put on data partitions under state names. */
const img: Record<string, string> = {};

beforeAll(async () => {
  requireRoot('loop devices and mounts');
  requireTools(['busybox', 'unshare', 'losetup', 'mkfs.ext4', 'mksquashfs', 'unsquashfs', 'setfattr', 'findfs']);
  sb = await Sandbox.create('state');
  img.newest = sb.path('newest.squashfs');
  img.backup = sb.path('backup.squashfs');
  img.gen2 = sb.path('gen2.squashfs');
  await buildState(sb, img.newest, 'newest');
  await buildState(sb, img.backup, 'backup');
  await buildState(sb, img.gen2, 'gen2');

  img.truncated = sb.path('truncated.squashfs');
  await truncatedCopy(img.newest, img.truncated);
  img.flipped = sb.path('flipped.squashfs');
  await bitFlippedCopy(img.newest, img.flipped);
  img.flippedBackup = sb.path('flipped-backup.squashfs');
  await bitFlippedCopy(img.backup, img.flippedBackup);
  const bytes = await readFile(img.newest);
  const sealAt = bytes.length - SEAL_SIZE;
  img.padded = sb.path('padded.squashfs');
  await writeFile(img.padded, Buffer.concat([bytes.subarray(0, sealAt), Buffer.alloc(512), bytes.subarray(sealAt)]));
  img.badSeal = sb.path('bad-seal.squashfs');
  await writeFile(img.badSeal, Buffer.concat([bytes.subarray(0, sealAt), Buffer.from(bytes.subarray(sealAt).toString().replace('\nend\n', '\nfin\n'))]));
});

afterAll(async () => {
  await sb?.cleanup();
});

const UPPER_BYTES = 64 << 20;
let rootCount = 0;

/**
 * Boots the state REQUESTED from a data partition holding FILES (state file
 * name -> image): find, mount, select, unpack, record. Returns the record,
 * the hostname the unpacked upper layer has, and what was said.
 */
async function boot(files: Record<string, string>, requested: string, rollback = '') {
  const part = await dataPartition(sb, files);
  const root = await sb.root(`root-${rootCount++}`);
  const r = await sb.lib(
    `
data_find "LABEL=${part.label}" || exit 10
data_mount "$cairn_data_dev" || exit 11
cairn_boot=${requested}
cairn_rollback=${rollback}
state_select "$cairn_boot"
upper_create tmpfs ${UPPER_BYTES} || exit 12
cairn_upper_bytes=${UPPER_BYTES}
state_fill || exit 13
record_write || exit 14
cat "$ROOT$CAIRN_BOOT_RECORD"
echo "hostname=$(cat "$ROOT$CAIRN_UPPER_DIR/etc/hostname" 2>/dev/null)"
echo "upper_entries=$(ls -A "$ROOT$CAIRN_UPPER_DIR" | wc -l)"
echo "user_files=$(ls "$ROOT$CAIRN_UPPER_DIR/home/user" 2>/dev/null | tr '\n' ' ')"
`,
    { root },
  );
  expect(r.exitCode, r.stderr).toBe(0);
  const out: Record<string, string> = { ...keyValues(r.stdout), console: r.stderr, kmsg: await readFile(`${root}/kmsg`, 'utf8') };
  return out;
}

describe('state selection on a real data partition', () => {
  it('boots the newest state when it is intact', async () => {
    const b = await boot({ 'upperfs.squashfs': img.newest!, 'upperfs-backup.squashfs': img.backup! }, 'default');
    expect(b).toMatchObject({ requested: 'default', used: 'default', state_id: 'id-newest', fallback: '', hostname: 'newest' });
    expect(b.console).not.toMatch(/warning/);
  });

  it('writes every key of the boot record', async () => {
    const b = await boot({ 'upperfs.squashfs': img.newest! }, 'default');
    expect(b).toMatchObject({
      requested: 'default',
      used: 'default',
      state_id: 'id-newest',
      fallback: '',
      rollback: '',
      upper: 'tmpfs',
      upper_size: String(UPPER_BYTES),
      kernel: KVER,
      session: 'b00710d0-0000-4000-8000-000000000001',
    });
  });

  it('falls back to the backup when the newest state is missing', async () => {
    const b = await boot({ 'upperfs-backup.squashfs': img.backup! }, 'default');
    expect(b).toMatchObject({ used: 'backup', state_id: 'id-backup', hostname: 'backup' });
    expect(b.fallback).toBe('upperfs.squashfs is missing');
    expect(b.console).toContain('warning: upperfs.squashfs is missing; booting the backup (upperfs-backup.squashfs) instead');
  });

  it('falls back to the backup when the newest state is truncated', async () => {
    const b = await boot({ 'upperfs.squashfs': img.truncated!, 'upperfs-backup.squashfs': img.backup! }, 'default');
    expect(b).toMatchObject({ requested: 'default', used: 'backup', state_id: 'id-backup', hostname: 'backup' });
    expect(b.fallback).toMatch(/^upperfs.squashfs has no intact seal at its end/);
  });

  it('falls back to the backup when a bit of the newest state is flipped, and says so on the console and in kmsg', async () => {
    const b = await boot({ 'upperfs.squashfs': img.flipped!, 'upperfs-backup.squashfs': img.backup! }, 'default');
    expect(b).toMatchObject({ used: 'backup', hostname: 'backup' });
    expect(b.fallback).toBe('upperfs.squashfs fails its checksum (sha256 mismatch)');
    const said = 'warning: upperfs.squashfs fails its checksum (sha256 mismatch); booting the backup (upperfs-backup.squashfs) instead';
    expect(b.console).toContain(`cairn: ${said}`);
    expect(b.kmsg).toContain(`<4>cairn: ${said}`);
  });

  it('falls back to the backup when the image before the seal is longer than the seal says', async () => {
    const b = await boot({ 'upperfs.squashfs': img.padded!, 'upperfs-backup.squashfs': img.backup! }, 'default');
    expect(b.used).toBe('backup');
    expect(b.fallback).toMatch(/^upperfs.squashfs is \d+ bytes where its seal says \d+ \(truncated or damaged\)$/);
  });

  it('falls back to the backup when the seal of the newest state is damaged', async () => {
    const b = await boot({ 'upperfs.squashfs': img.badSeal!, 'upperfs-backup.squashfs': img.backup! }, 'default');
    expect(b.used).toBe('backup');
    expect(b.fallback).toMatch(/^upperfs.squashfs has no intact seal/);
  });

  it('boots clean, with both reasons recorded, when the newest state and the backup are both bad', async () => {
    const b = await boot({ 'upperfs.squashfs': img.flipped!, 'upperfs-backup.squashfs': img.flippedBackup! }, 'default');
    expect(b).toMatchObject({ requested: 'default', used: 'clean', state_id: '', hostname: '', upper_entries: '0' });
    expect(b.fallback).toBe(
      'upperfs.squashfs fails its checksum (sha256 mismatch); upperfs-backup.squashfs fails its checksum (sha256 mismatch)',
    );
    expect(b.console).toContain('booting clean (no saved state) instead');
  });

  it('boots clean on a new stick with no state at all, says it is the first boot, and records no fallback', async () => {
    const b = await boot({}, 'default');
    expect(b).toMatchObject({ used: 'clean', upper_entries: '0', fallback: '', skipped: '' });
    expect(b.console).toContain('no saved state on this stick yet (its first boot): booting clean (no saved state)');
    expect(b.console).not.toMatch(/missing|warning/);
  });

  it('still falls back, naming what is missing, when only an older generation is left', async () => {
    const b = await boot({ 'upperfs-gen-2.squashfs': img.gen2! }, 'default');
    expect(b).toMatchObject({ used: 'clean' });
    expect(b.fallback).toBe('upperfs.squashfs is missing; upperfs-backup.squashfs is missing');
    expect(b.console).not.toContain('first boot');
  });

  it('boots the backup when asked, even with an intact newest state', async () => {
    const b = await boot({ 'upperfs.squashfs': img.newest!, 'upperfs-backup.squashfs': img.backup! }, 'backup');
    expect(b).toMatchObject({ requested: 'backup', used: 'backup', state_id: 'id-backup', fallback: '', hostname: 'backup' });
  });

  it('falls back from a bad backup to clean, not to the newest state', async () => {
    const b = await boot({ 'upperfs.squashfs': img.newest!, 'upperfs-backup.squashfs': img.truncated! }, 'backup');
    expect(b).toMatchObject({ requested: 'backup', used: 'clean', hostname: '' });
    expect(b.fallback).toMatch(/^upperfs-backup.squashfs has no intact seal/);
  });

  it('boots an older generation when asked', async () => {
    const b = await boot(
      { 'upperfs.squashfs': img.newest!, 'upperfs-backup.squashfs': img.backup!, 'upperfs-gen-2.squashfs': img.gen2! },
      'gen-2',
    );
    expect(b).toMatchObject({ requested: 'gen-2', used: 'gen-2', state_id: 'id-gen2', fallback: '', hostname: 'gen2' });
  });

  it('falls back from a missing or bad generation to clean, not to a newer state', async () => {
    const files = { 'upperfs.squashfs': img.newest!, 'upperfs-backup.squashfs': img.backup!, 'upperfs-gen-2.squashfs': img.flipped! };
    const missing = await boot(files, 'gen-3');
    expect(missing).toMatchObject({ requested: 'gen-3', used: 'clean', fallback: 'upperfs-gen-3.squashfs is missing' });
    const bad = await boot(files, 'gen-2');
    expect(bad).toMatchObject({ requested: 'gen-2', used: 'clean', fallback: 'upperfs-gen-2.squashfs fails its checksum (sha256 mismatch)' });
  });

  it('on GRUB\'s rollback (cairn.boot=backup cairn.rollback=state) boots the backup as a fallback from the newest, which it holds', async () => {
    const b = await boot({ 'upperfs.squashfs': img.newest!, 'upperfs-backup.squashfs': img.backup! }, 'backup', 'state');
    expect(b).toMatchObject({ requested: 'default', used: 'backup', state_id: 'id-backup', hostname: 'backup', rollback: 'state', skipped: 'id-newest' });
    expect(b.fallback).toBe('upperfs.squashfs did not bring the system up in its tries (boot counting)');
    expect(b.console).toContain('upperfs.squashfs did not bring the system up in its tries (boot counting); booting the backup (upperfs-backup.squashfs) instead');
    const noBackup = await boot({ 'upperfs.squashfs': img.newest! }, 'backup', 'state');
    expect(noBackup).toMatchObject({ requested: 'default', used: 'clean', skipped: 'id-newest' });
    expect(noBackup.fallback).toBe('upperfs.squashfs did not bring the system up in its tries (boot counting); upperfs-backup.squashfs is missing');
  });

  it('boots clean when asked, unpacking nothing and recording no fallback', async () => {
    const b = await boot({ 'upperfs.squashfs': img.newest!, 'upperfs-backup.squashfs': img.backup! }, 'clean');
    expect(b).toMatchObject({ requested: 'clean', used: 'clean', state_id: '', fallback: '', upper_entries: '0' });
    expect(b.console).not.toMatch(/warning/);
  });
});

describe('state_check', () => {
  let squashfs: Buffer;

  beforeAll(async () => {
    await mkdir(sb.path('check-tree'));
    await writeFile(sb.path('check-tree/file'), 'x');
    await mksquashfs(sb.path('check-tree'), sb.path('raw.squashfs'));
    squashfs = await readFile(sb.path('raw.squashfs'));
  });

  /** An image with a hand-written seal: LINES joined, then newline padding. */
  async function withSeal(name: string, lines: string[], tail = ''): Promise<string> {
    const text = Buffer.from(`${lines.join('\n')}\n${tail}`);
    const seal = Buffer.concat([text, Buffer.alloc(SEAL_SIZE - text.length, '\n')]);
    const path = sb.path(name);
    await writeFile(path, Buffer.concat([squashfs, seal]));
    return path;
  }

  const sum = () => createHash('sha256').update(squashfs).digest('hex');

  async function check(path: string) {
    const root = await sb.root(`root-${rootCount++}`);
    const r = await sb.lib(`state_check '${path}'; echo "rc=$?"`, { root, binds: [], run: false });
    return keyValues(r.stdout).rc === '0' ? 'intact' : r.stdout.split('\n')[0];
  }

  it('accepts a seal as docs/state-format.md writes it, fields in any order, unknown keys too', async () => {
    const path = await withSeal('ok', [SEAL_MAGIC, `sha256=${sum()}`, 'future_key=1', `size=${squashfs.length}`, 'id=x', 'end']);
    expect(await check(path)).toBe('intact');
  });

  it.each([
    ['a size with arithmetic in it', () => [SEAL_MAGIC, `size=${squashfs.length - 1}+1`, `sha256=${sum()}`, 'end']],
    ['a size with a leading zero', () => [SEAL_MAGIC, `size=0${squashfs.length}`, `sha256=${sum()}`, 'end']],
    ['an upper-case sha256', () => [SEAL_MAGIC, `size=${squashfs.length}`, `sha256=${sum().toUpperCase()}`, 'end']],
    ['a short sha256', () => [SEAL_MAGIC, `size=${squashfs.length}`, `sha256=${sum().slice(1)}`, 'end']],
  ])('refuses a seal with %s', async (_what, lines) => {
    const path = await withSeal(`bad-${rootCount}`, lines());
    expect(await check(path)).toBe('has a seal without a valid size or sha256');
  });

  it.each([
    ['no magic line', () => [`size=${squashfs.length}`, `sha256=${sum()}`, 'end'], ''],
    ['no end line', () => [SEAL_MAGIC, `size=${squashfs.length}`, `sha256=${sum()}`], ''],
    ['a line that is not key=value', () => [SEAL_MAGIC, `size=${squashfs.length}`, 'garbage', `sha256=${sum()}`, 'end'], ''],
    ['text after the end line', () => [SEAL_MAGIC, `size=${squashfs.length}`, `sha256=${sum()}`, 'end'], 'trailing\n'],
  ])('refuses a seal with %s', async (_what, lines, tail) => {
    const path = await withSeal(`bad-${rootCount}`, lines(), tail);
    expect(await check(path)).toMatch(/^has no intact seal at its end/);
  });

  it('refuses a file no longer than a seal', async () => {
    await writeFile(sb.path('tiny'), Buffer.alloc(SEAL_SIZE, '\n'));
    expect(await check(sb.path('tiny'))).toMatch(/^has no intact seal at its end/);
  });

  it('refuses a directory in place of a state', async () => {
    expect(await check(sb.dir)).toBe('is a directory, not a state image');
  });

  it('refuses a symbolic link, dangling or to an intact state, and a FIFO, as cairn status does', async () => {
    const intact = await withSeal('link-target', [SEAL_MAGIC, `size=${squashfs.length}`, `sha256=${sum()}`, 'end']);
    expect(await check(intact)).toBe('intact');
    await symlink(intact, sb.path('link-to-intact'));
    await symlink(sb.path('nowhere'), sb.path('link-dangling'));
    await execa('mkfifo', [sb.path('fifo')]);
    const expected = {
      'link-to-intact': 'a symbolic link, not a state image',
      'link-dangling': 'a symbolic link, not a state image',
      fifo: 'a special file, not a state image',
    };
    for (const [name, problem] of Object.entries(expected)) {
      expect(await check(sb.path(name)), name).toBe(`is ${problem}`);
      expect(await checkIntegrity(sb.path(name)), name).toMatchObject({ ok: false, problem });
    }
  });

  // A reader taking the first value and one taking the last would disagree
  // about such a seal: whichever value is wrong, both readers refuse it.
  it.each([
    ['the size twice, the second one wrong', () => [`size=${squashfs.length}`, `size=${squashfs.length + 1}`, `sha256=${sum()}`]],
    ['the size twice, the first one wrong', () => [`size=${squashfs.length + 1}`, `size=${squashfs.length}`, `sha256=${sum()}`]],
    ['the sha256 twice, the second one wrong', () => [`size=${squashfs.length}`, `sha256=${sum()}`, `sha256=${'0'.repeat(64)}`]],
    ['an id twice', () => [`size=${squashfs.length}`, `sha256=${sum()}`, 'id=a', 'id=b']],
  ])('refuses a seal with %s, in the words cairn status uses', async (_what, fields) => {
    const path = await withSeal(`dup-${rootCount}`, [SEAL_MAGIC, ...fields(), 'end']);
    expect(await check(path)).toBe('has a seal with duplicate keys');
    expect(await checkIntegrity(path)).toMatchObject({ ok: false, problem: 'the seal has duplicate keys' });
  });
});

describe('states sealed with cksum_fix: one cksum of the whole file, checked while the state unpacks', () => {
  let sealed: SealFields;

  beforeAll(async () => {
    img.ck = sb.path('ck-newest.squashfs');
    img.ckBackup = sb.path('ck-backup.squashfs');
    // Random files, so that a flipped bit in their data still unpacks: only the check finds it.
    sealed = await buildState(sb, img.ck, 'cknewest', 2, { cksum: true });
    await buildState(sb, img.ckBackup, 'ckbackup', 0, { cksum: true });
  });

  /** A copy of the cksum-sealed newest state with bit BIT of the byte at OFFSET flipped. */
  async function flipped(name: string, offset: (image: Buffer, sealText: string) => number, bit = 0): Promise<string> {
    const bytes = await readFile(img.ck!);
    const sealText = bytes.subarray(sealed.size).toString('latin1');
    bytes[offset(bytes, sealText)]! ^= 1 << bit;
    const path = sb.path(`ck-${name}.squashfs`);
    await writeFile(path, bytes);
    return path;
  }

  it('boots an intact one, and a backup sealed by an older cairn (no cksum_fix) still boots', async () => {
    const b = await boot({ 'upperfs.squashfs': img.ck!, 'upperfs-backup.squashfs': img.backup! }, 'default');
    expect(b).toMatchObject({ used: 'default', state_id: 'id-cknewest', fallback: '', hostname: 'cknewest' });
    expect(b.user_files!.split(' ')).toEqual(expect.arrayContaining(['big-0', 'big-1', 'notes']));
    const old = await boot({ 'upperfs.squashfs': img.flipped!, 'upperfs-backup.squashfs': img.backup! }, 'default');
    expect(old).toMatchObject({ used: 'backup', hostname: 'backup', fallback: 'upperfs.squashfs fails its checksum (sha256 mismatch)' });
  });

  it.each([
    ['the first byte of the image (the superblock)', () => 0],
    ['the data of a file in the image, which unsquashfs unpacks without a word', () => 2000],
    ['the last byte of the image', () => sealed.size - 1],
    // Fields the sha256 does not cover: only the cksum of the whole file finds these.
    ['the id in the seal', (_b: Buffer, t: string) => sealed.size + t.indexOf('\nid=') + 5],
    ['the space in the seal', (_b: Buffer, t: string) => sealed.size + t.indexOf('\nspace=') + 8],
    ['the cksum_fix field', (_b: Buffer, t: string) => sealed.size + t.indexOf('\ncksum_fix=') + 20],
    // A digit, which a flipped low bit leaves a digit: the seal keeps its form.
    ['the sha256 in the seal', (_b: Buffer, t: string) => sealed.size + t.indexOf('\nsha256=') + 8 + sealed.sha256.search(/[0-9]/)],
  ])('falls back to the backup, with the upper layer emptied first, when a bit of %s is flipped', async (what, offset) => {
    const bad = await flipped(what.replace(/\W+/g, '-'), offset);
    const b = await boot({ 'upperfs.squashfs': bad, 'upperfs-backup.squashfs': img.ckBackup! }, 'default');
    expect(b).toMatchObject({ requested: 'default', used: 'backup', state_id: 'id-ckbackup', hostname: 'ckbackup' });
    expect(b.fallback).toBe('upperfs.squashfs fails its checksum (cksum mismatch)');
    expect(b.console).toContain('warning: upperfs.squashfs fails its checksum (cksum mismatch); booting the backup');
    // Nothing the damaged state unpacked is left beside the backup's files.
    expect(b.user_files!.trim()).toBe('notes');
  });

  it('refuses a flipped bit in the seal that breaks its form, as any seal', async () => {
    const inPadding = await flipped('padding', (bytes) => bytes.length - 1);
    const pad = await boot({ 'upperfs.squashfs': inPadding, 'upperfs-backup.squashfs': img.ckBackup! }, 'default');
    expect(pad).toMatchObject({ used: 'backup', hostname: 'ckbackup' });
    expect(pad.fallback).toMatch(/^upperfs.squashfs has no intact seal at its end/);
    // '0' (0x30) with bit 1 flipped is '2': not a binary digit.
    const inFix = await flipped('fix-digit', (_b, t) => sealed.size + t.indexOf('\ncksum_fix=') + 12, 1);
    const fix = await boot({ 'upperfs.squashfs': inFix, 'upperfs-backup.squashfs': img.ckBackup! }, 'default');
    expect(fix).toMatchObject({ used: 'backup', hostname: 'ckbackup', fallback: 'upperfs.squashfs has a seal without a valid cksum_fix' });
  });

  it('boots clean, both reasons recorded, when the newest state and the backup both fail their cksum', async () => {
    const a = await flipped('both-a', () => 2000);
    const bBytes = await readFile(img.ckBackup!);
    bBytes[100]! ^= 4;
    const b2 = sb.path('ck-both-b.squashfs');
    await writeFile(b2, bBytes);
    const b = await boot({ 'upperfs.squashfs': a, 'upperfs-backup.squashfs': b2 }, 'default');
    expect(b).toMatchObject({ used: 'clean', hostname: '', upper_entries: '0' });
    expect(b.fallback).toBe('upperfs.squashfs fails its checksum (cksum mismatch); upperfs-backup.squashfs fails its checksum (cksum mismatch)');
  });
});
