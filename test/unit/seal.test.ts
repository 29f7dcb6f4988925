import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile, truncate, readFile, symlink, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkIntegrity, Cksum, cksumOf, decodeSeal, encodeSeal, readSeal, type Seal } from '../../src/state/seal.js';
import { SEAL } from '../../src/names.js';

const seal = (over: Partial<Seal> = {}): Seal => ({
  size: 123_456,
  sha256: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  id: '0b7c3f7e-2d5e-4a51-9c59-3d1d2f1d9a10',
  parent: '5f8a0c1e-8f5b-4a71-a1f3-7a2c0e9b1d22',
  session: 'c1f0d7a2-1e0b-4b1a-9d5e-2f7b8a6c4d11',
  created: 1_700_000_000,
  files: 1234,
  space: 5_000_000,
  ...over,
});

/** A seal block from raw text, padded like encodeSeal pads. */
const block = (text: string) => Buffer.concat([Buffer.from(text), Buffer.alloc(SEAL.size - Buffer.byteLength(text), '\n')]);
const goodText = (s: Seal) => encodeSeal(s).toString('latin1').replace(/\n+$/, '\n');

describe('encodeSeal', () => {
  it('is exactly 4096 bytes of newline-padded text starting with the magic line', () => {
    const b = encodeSeal(seal());
    expect(b.length).toBe(4096);
    expect(b.length).toBe(SEAL.size);
    expect(b.subarray(0, 'cairn-state 1\n'.length).toString()).toBe('cairn-state 1\n');
    const text = b.toString('latin1');
    const body = text.replace(/\n+$/, '');
    expect(body.split('\n')).toEqual([
      'cairn-state 1',
      'size=123456',
      `sha256=${seal().sha256}`,
      `id=${seal().id}`,
      `parent=${seal().parent}`,
      `session=${seal().session}`,
      'created=1700000000',
      'files=1234',
      'space=5000000',
      'end',
    ]);
    // Everything after the fields is newlines.
    expect(/^\n*$/.test(text.slice(body.length))).toBe(true);
  });

  it('round-trips through decodeSeal, empty parent and session included', () => {
    for (const s of [seal(), seal({ parent: '', session: '' }), seal({ size: 1, files: 0, created: 0 })]) {
      expect(decodeSeal(encodeSeal(s))).toEqual(s);
    }
  });

  it('refuses a field that would break the format', () => {
    expect(() => encodeSeal(seal({ id: 'a\nsize=1' }))).toThrow();
    expect(() => encodeSeal(seal({ session: 'x=y' }))).toThrow();
    expect(() => encodeSeal(seal({ parent: 'p'.repeat(5000) }))).toThrow(/too large/);
  });
});

describe('decodeSeal', () => {
  const problem = (b: Buffer) => {
    const r = decodeSeal(b);
    expect(r, 'expected a problem').toHaveProperty('problem');
    return (r as { problem: string }).problem;
  };

  it('accepts a hand-written seal as documented', () => {
    const r = decodeSeal(block(goodText(seal())));
    expect(r).toEqual(seal());
  });

  it('rejects a wrong or missing magic line', () => {
    expect(problem(block(goodText(seal()).replace('cairn-state 1', 'cairn-state 2')))).toMatch(/no cairn seal/);
    expect(problem(block(goodText(seal()).replace('cairn-state 1\n', '')))).toMatch(/no cairn seal/);
    expect(problem(Buffer.alloc(4096))).toMatch(/no cairn seal/);
    expect(problem(randomBytes(4096))).toBeTruthy();
  });

  it('rejects a seal without its end line', () => {
    expect(problem(block(goodText(seal()).replace('\nend\n', '\n')))).toMatch(/incomplete/);
  });

  for (const [what, size] of [
    ['missing', undefined],
    ['empty', ''],
    ['zero', '0'],
    ['negative', '-5'],
    ['not a number', '12ab'],
    ['fractional', '1.5'],
    ['beyond a safe integer', '99999999999999999999'],
  ] as const) {
    it(`rejects a size that is ${what}`, () => {
      const text = goodText(seal()).replace(/^size=.*\n/m, size === undefined ? '' : `size=${size}\n`);
      expect(problem(block(text))).toMatch(/size/);
    });
  }

  for (const [what, sum] of [
    ['missing', undefined],
    ['too short', 'abc123'],
    ['upper-case', seal().sha256.toUpperCase()],
    ['not hex', 'g'.repeat(64)],
    ['too long', `${seal().sha256}0`],
  ] as const) {
    it(`rejects a sha256 that is ${what}`, () => {
      const text = goodText(seal()).replace(/^sha256=.*\n/m, sum === undefined ? '' : `sha256=${sum}\n`);
      expect(problem(block(text))).toMatch(/checksum/);
    });
  }
});

describe('readSeal and checkIntegrity on files', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-seal-test-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A fake image of random bytes followed by its correct seal. */
  async function sealedFile(name: string, imageBytes = 10_000): Promise<{ path: string; image: Buffer; s: Seal }> {
    const image = randomBytes(imageBytes);
    const s = seal({ size: image.length, sha256: createHash('sha256').update(image).digest('hex') });
    const path = join(dir, name);
    await writeFile(path, Buffer.concat([image, encodeSeal(s)]));
    return { path, image, s };
  }

  it('a correctly sealed file is ok, by seal and by checksum', async () => {
    const { path, s, image } = await sealedFile('good');
    expect(await readSeal(path)).toEqual({ ok: true, seal: s, fileSize: image.length + 4096 });
    expect(await checkIntegrity(path)).toEqual({ ok: true, seal: s, fileSize: image.length + 4096 });
  });

  it('a file one byte short is not ok, and the problem says truncated', async () => {
    const { path } = await sealedFile('short');
    await truncate(path, 10_000 + 4096 - 1);
    for (const r of [await readSeal(path), await checkIntegrity(path)]) {
      expect(r.ok).toBe(false);
      expect(!r.ok && r.problem).toMatch(/truncat/);
    }
  });

  it('a file cut inside the image (seal moved up) is not ok', async () => {
    const { path, image, s } = await sealedFile('cut');
    await writeFile(path, Buffer.concat([image.subarray(0, 5000), encodeSeal(s)]));
    const r = await readSeal(path);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.problem).toMatch(/truncated/);
  });

  it('a file with a byte appended is not ok', async () => {
    const { path } = await sealedFile('long');
    await writeFile(path, Buffer.from('x'), { flag: 'a' });
    expect((await checkIntegrity(path)).ok).toBe(false);
  });

  it('a flipped byte in the image passes the cheap seal read but fails checkIntegrity with a checksum mismatch', async () => {
    const { path } = await sealedFile('flipped');
    const bytes = await readFile(path);
    bytes[4321]! ^= 0x01;
    await writeFile(path, bytes);
    expect((await readSeal(path)).ok).toBe(true);
    const r = await checkIntegrity(path);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.problem).toMatch(/checksum mismatch/);
    expect(r.seal?.size).toBe(10_000);
  });

  it('a file of 4096 bytes or fewer is not ok', async () => {
    for (const n of [0, 100, 4095, 4096]) {
      const path = join(dir, `tiny-${n}`);
      await writeFile(path, Buffer.alloc(n, '\n'));
      const r = await checkIntegrity(path);
      expect(r.ok, `${n} bytes`).toBe(false);
      expect(!r.ok && r.problem).toMatch(/too short/);
      expect(r.fileSize).toBe(n);
    }
  });

  it('a file without a seal (a bare image) is not ok', async () => {
    const path = join(dir, 'bare');
    await writeFile(path, randomBytes(20_000));
    const r = await readSeal(path);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.problem).toMatch(/no cairn seal/);
  });

  describe('the busybox check documented in docs/state-format.md', () => {
    // The check from the doc, verbatim where it can be, with the fields read
    // from the seal by the shell alone. Exit 0: intact.
    const script = `
f=$1
total=$(stat -c %s "$f")
seal=$(tail -c 4096 "$f")
size=; sha256=
while IFS= read -r line; do
  case $line in
    size=*) size=\${line#size=} ;;
    sha256=*) sha256=\${line#sha256=} ;;
  esac
done <<EOF
$seal
EOF
[ -n "$size" ] || exit 3
[ "$total" -eq $((size + 4096)) ] || exit 4
sum=$(head -c "$size" "$f" | sha256sum); [ "\${sum%% *}" = "$sha256" ] || exit 5
exit 0
`;
    let bin: string;
    const busybox = '/usr/bin/busybox';

    beforeAll(async () => {
      // Fails loudly: this test is meant to run with the real busybox.
      expect(existsSync(busybox), `${busybox} is missing: install busybox to run this test`).toBe(true);
      // Only busybox applets on PATH, so nothing else answers for it.
      bin = join(dir, 'bin');
      await mkdir(bin);
      for (const applet of ['stat', 'tail', 'head', 'sha256sum']) await symlink(busybox, join(bin, applet));
    });

    const bbCheck = (path: string) =>
      spawnSync(busybox, ['sh', '-c', script, 'check', path], { env: { PATH: bin }, encoding: 'utf8' });

    it('uses busybox applets only', () => {
      const which = execFileSync(busybox, ['sh', '-c', 'for a in stat tail head sha256sum; do command -v "$a" || echo "missing $a"; done'], {
        env: { PATH: bin },
        encoding: 'utf8',
      });
      // A standalone busybox shell names its own applets; otherwise they are our links to busybox.
      const found = which.trim().split('\n');
      ['stat', 'tail', 'head', 'sha256sum'].forEach((a, i) => expect([a, join(bin, a)]).toContain(found[i]));
    });

    it('accepts a good sealed file', async () => {
      const { path } = await sealedFile('bb-good', 70_000);
      const r = bbCheck(path);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    });

    it('rejects a file with a flipped byte (checksum)', async () => {
      const { path } = await sealedFile('bb-flipped', 70_000);
      const bytes = await readFile(path);
      bytes[12_345]! ^= 0x80;
      await writeFile(path, bytes);
      expect(bbCheck(path).status).toBe(5);
    });

    it('rejects a file truncated by one byte', async () => {
      const { path } = await sealedFile('bb-short', 70_000);
      await truncate(path, 70_000 + 4096 - 1);
      expect(bbCheck(path).status).not.toBe(0);
    });

    it('agrees with checkIntegrity on a good and a bad file', async () => {
      const { path } = await sealedFile('bb-agree', 5000);
      expect(bbCheck(path).status === 0).toBe((await checkIntegrity(path)).ok);
      const bytes = await readFile(path);
      bytes[0]! ^= 0xff;
      await writeFile(path, bytes);
      expect(bbCheck(path).status === 0).toBe((await checkIntegrity(path)).ok);
      expect((await checkIntegrity(path)).ok).toBe(false);
    });
  });
});

describe('decodeSeal is as strict as the initramfs check', () => {
  const good = () =>
    encodeSeal({ size: 8192, sha256: 'ab'.repeat(32), id: 'x', parent: '', session: '', created: 1, files: 2, space: 0 }).toString('latin1');
  const decode = (text: string) => decodeSeal(Buffer.from(text.padEnd(4096, '\n'), 'latin1'));

  it.each([
    ['data after the end line', (t: string) => t.replace('end\n', 'end\ngarbage\n'), /data after its end/],
    ['a line that is not key=value', (t: string) => t.replace('id=x', 'id x'), /malformed line/],
    ['a size with a leading zero', (t: string) => t.replace('size=8192', 'size=08192'), /no valid size/],
    ['an upper-case checksum', (t: string) => t.replace('ab'.repeat(32), 'AB'.repeat(32)), /no valid checksum/],
    // The initramfs would read the first of two values, a last-wins reader the
    // other: a seal with a key twice is refused by both (state.test.ts).
    ['the size twice, the first one wrong', (t: string) => t.replace('size=8192', 'size=4096\nsize=8192'), /^the seal has duplicate keys$/],
    ['the size twice, the second one wrong', (t: string) => t.replace('size=8192', 'size=8192\nsize=4096'), /^the seal has duplicate keys$/],
    ['the checksum twice, the same both times', (t: string) => t.replace(/^(sha256=.*)$/m, '$1\n$1'), /^the seal has duplicate keys$/],
    ['an unknown key twice', (t: string) => t.replace('id=x', 'id=x\nfuture=1\nfuture=2'), /^the seal has duplicate keys$/],
  ])('rejects %s', (_, mutate, problem) => {
    const result = decode(mutate(good()).trimEnd() + '\n');
    expect('problem' in result && result.problem).toMatch(problem);
  });

  it('accepts what encodeSeal writes', () => {
    expect(decode(good())).toMatchObject({ size: 8192, id: 'x', files: 2 });
  });
});

describe('the cksum_fix field: one cksum of the whole file checks the image and its seal', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-seal-cksum-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** What this machine's cksum (GNU coreutils, not cairn's code) prints for FILE: crc and length. */
  const cksumTool = (file: string) => execFileSync('cksum', [file], { encoding: 'utf8' }).split(' ').slice(0, 2).map(Number);

  async function sealedWithFix(name: string, imageBytes: number): Promise<{ path: string; image: Buffer }> {
    const image = randomBytes(imageBytes);
    const path = join(dir, name);
    await writeFile(path, image);
    const imageCksum = cksumTool(path)[0]!;
    const s = seal({ size: image.length, sha256: createHash('sha256').update(image).digest('hex') });
    await writeFile(path, Buffer.concat([image, encodeSeal(s, { imageCksum })]));
    return { path, image };
  }

  it('computes what cksum computes, for lengths that take one to four length bytes', async () => {
    for (const n of [0, 1, 255, 256, 70_000, 1 << 24]) {
      const data = randomBytes(n);
      await writeFile(join(dir, 'data'), data);
      expect(new Cksum().update(data.subarray(0, 7)).update(data.subarray(7)).digest(), `${n} bytes`).toBe(cksumTool(join(dir, 'data'))[0]);
    }
  });

  it('makes cksum print SEAL.cksum and the file size for the sealed file, as the boot checks it', async () => {
    for (const [i, n] of [4096, 70_000, 1_000_000].entries()) {
      const { path, image } = await sealedWithFix(`fixed-${i}`, n);
      expect(cksumTool(path)).toEqual([SEAL.cksum, image.length + SEAL.size]);
      expect(await cksumOf(path)).toBe(SEAL.cksum);
      const text = (await readFile(path)).subarray(image.length).toString('latin1');
      expect(text).toMatch(/\ncksum_fix=[01]{32}\nend\n\n+$/);
      const r = await readSeal(path);
      expect(r.ok && r.seal.cksumFix).toMatch(/^[01]{32}$/);
      expect((await checkIntegrity(path)).ok).toBe(true);
    }
  });

  it('a single flipped bit anywhere, in the image, the seal or the field itself, changes the cksum and fails checkIntegrity', async () => {
    const { path, image } = await sealedWithFix('flips', 20_000);
    const good = await readFile(path);
    const text = good.subarray(image.length).toString('latin1');
    const at = (s: string) => image.length + text.indexOf(s);
    const places = {
      'the first byte of the image': 0,
      'the middle of the image': 10_000,
      'the last byte of the image': image.length - 1,
      // A seal field the sha256 does not cover: the id.
      'the id in the seal': at('id=') + 5,
      'the cksum_fix field': at('cksum_fix=') + 'cksum_fix='.length + 7,
      'the padding after end': good.length - 1,
    };
    for (const [what, offset] of Object.entries(places)) {
      for (const bit of [0, 5]) {
        const bad = Buffer.from(good);
        bad[offset]! ^= 1 << bit;
        await writeFile(path, bad);
        expect(cksumTool(path)[0], `${what}, bit ${bit}`).not.toBe(SEAL.cksum);
        expect((await checkIntegrity(path)).ok, `${what}, bit ${bit}`).toBe(false);
      }
    }
  });

  it('a seal without the field (older cairn) still decodes and is checked by its sha256', async () => {
    const image = randomBytes(30_000);
    const path = join(dir, 'old-format');
    await writeFile(path, Buffer.concat([image, encodeSeal(seal({ size: image.length, sha256: createHash('sha256').update(image).digest('hex') }))]));
    const r = await readSeal(path);
    expect(r.ok && r.seal.cksumFix).toBe(undefined);
    expect((await checkIntegrity(path)).ok).toBe(true);
  });

  it('refuses a cksum_fix that is not 32 binary digits', () => {
    const text = encodeSeal(seal(), { imageCksum: 1 }).toString('latin1');
    const bad = text.replace(/cksum_fix=[01]{32}/, `cksum_fix=${'2'.repeat(32)}`);
    expect(decodeSeal(Buffer.from(bad, 'latin1'))).toEqual({ problem: 'the seal has no valid cksum_fix' });
  });
});
