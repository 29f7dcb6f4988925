import { describe, it, expect } from 'vitest';
import { DEFAULTS, parseConfig } from '../../src/config.js';
import { UsageError } from '../../src/lib/errors.js';
import { DEFAULT_EXCLUDES } from '../../src/save/exclude.js';

const SRC = '/etc/cairn/cairn.conf';
const parse = (text: string) => parseConfig(text, SRC);

/** The UsageError a config text raises. */
function usageError(text: string): UsageError {
  try {
    parse(text);
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    return e as UsageError;
  }
  throw new Error(`no error for ${JSON.stringify(text)}`);
}

describe('parseConfig', () => {
  it('an empty file gives the documented defaults', () => {
    expect(parse('')).toEqual({
      upperDir: '/run/cairn/rw/upper',
      dataDir: '/persist',
      generations: 2,
      compression: 'zstd',
      compressionLevel: 3,
      mksquashfsMem: '256M',
      excludes: [...DEFAULT_EXCLUDES],
      lockWait: 120,
      checkpointInterval: 10,
      chainMax: 8,
      chainRatio: 0.5,
    });
    expect(parse('')).toEqual(DEFAULTS);
  });

  it('comments and blank lines are ignored', () => {
    expect(parse('# a comment\n\n   \n  # indented comment\n\t\n')).toEqual(DEFAULTS);
    expect(parse('# generations=7\n').generations).toBe(2);
  });

  it('reads every key', () => {
    const c = parse(
      [
        'upper_dir=/mnt/upper',
        'data_dir=/mnt/data',
        'generations=5',
        'compression=xz',
        'compression_level=9',
        'mksquashfs_mem=1G',
        'lock_wait=30',
        'checkpoint_interval=15',
        'chain_max=4',
        'chain_ratio=1.25',
      ].join('\n'),
    );
    expect(c).toEqual({
      ...DEFAULTS,
      upperDir: '/mnt/upper',
      dataDir: '/mnt/data',
      generations: 5,
      compression: 'xz',
      compressionLevel: 9,
      mksquashfsMem: '1G',
      lockWait: 30,
      checkpointInterval: 15,
      chainMax: 4,
      chainRatio: 1.25,
    });
  });

  it('accepts every compressor and leaves the level to mksquashfs when empty', () => {
    for (const c of ['zstd', 'gzip', 'xz', 'lz4', 'lzo'] as const) expect(parse(`compression=${c}`).compression).toBe(c);
    expect(parse('compression_level=').compressionLevel).toBeUndefined();
  });

  it('takes sh-style quotes, spaces around = and CRLF line ends', () => {
    expect(parse('data_dir="/mnt/my data"').dataDir).toBe('/mnt/my data');
    expect(parse('  generations = 4  ').generations).toBe(4);
    expect(parse('generations=3\r\nlock_wait=5\r\n')).toMatchObject({ generations: 3, lockWait: 5 });
  });

  it('a later line overrides an earlier one', () => {
    expect(parse('generations=3\ngenerations=6').generations).toBe(6);
  });

  it('an unknown key is a UsageError naming file:line and the key', () => {
    const e = usageError('# comment\ngenerations=3\n\ngenerashuns=4\n');
    expect(e.message).toContain(`${SRC}:4`);
    expect(e.message).toContain('generashuns');
    expect(e.exitCode).toBe(2);
  });

  it('a line without key=value is a UsageError naming file:line', () => {
    expect(usageError('generations 3').message).toContain(`${SRC}:1`);
    expect(usageError('\n=3').message).toContain(`${SRC}:2`);
  });

  for (const [line, where] of [
    ['generations=0', 'generations 0'],
    ['generations=101', 'generations past 100'],
    ['generations=-1', 'negative'],
    ['generations=two', 'a word'],
    ['generations=2.5', 'a fraction'],
    ['generations=1e1', 'an exponent'],
    ['generations=', 'empty'],
    ['generations=0x10', 'hex'],
    ['lock_wait=-1', 'a negative lock_wait'],
    ['lock_wait=86401', 'a lock_wait past a day'],
    ['compression_level=0', 'compression level 0'],
    ['compression_level=23', 'compression level 23'],
    ['compression_level=fast', 'a word as level'],
    ['checkpoint_interval=-1', 'a negative checkpoint_interval'],
    ['checkpoint_interval=1441', 'a checkpoint_interval past a day'],
    ['checkpoint_interval=2.5', 'a fraction of a minute'],
    ['checkpoint_interval=10m', 'a unit after the minutes'],
    ['chain_max=0', 'chain_max 0'],
    ['chain_max=65', 'chain_max past 64'],
    ['chain_ratio=0', 'chain_ratio 0'],
    ['chain_ratio=0.0', 'chain_ratio 0.0'],
    ['chain_ratio=10.5', 'chain_ratio past 10'],
    ['chain_ratio=-0.5', 'a negative chain_ratio'],
    ['chain_ratio=1e-1', 'a chain_ratio with an exponent'],
    ['chain_ratio=50%', 'a chain_ratio in percent'],
    ['chain_ratio=half', 'a word as chain_ratio'],
    ['chain_ratio=', 'an empty chain_ratio'],
  ] as const) {
    it(`rejects ${where} (${line}) naming the line`, () => {
      const e = usageError(`# x\n${line}\n`);
      expect(e.message).toContain(`${SRC}:2`);
      expect(e.message).toContain(`"${line.split('=')[1]}"`);
    });
  }

  it('accepts the bounds', () => {
    expect(parse('generations=1').generations).toBe(1);
    expect(parse('generations=100').generations).toBe(100);
    expect(parse('lock_wait=0').lockWait).toBe(0);
    expect(parse('compression_level=22').compressionLevel).toBe(22);
    expect(parse('checkpoint_interval=0').checkpointInterval).toBe(0);
    expect(parse('checkpoint_interval=1440').checkpointInterval).toBe(1440);
    expect(parse('chain_max=1').chainMax).toBe(1);
    expect(parse('chain_max=64').chainMax).toBe(64);
    expect(parse('chain_ratio=10').chainRatio).toBe(10);
    expect(parse('chain_ratio=0.01').chainRatio).toBe(0.01);
    expect(parse('chain_ratio=.25').chainRatio).toBe(0.25);
    expect(parse('chain_ratio="2."').chainRatio).toBe(2);
  });

  it('rejects an unknown compressor, a bad memory size and relative paths', () => {
    expect(usageError('compression=brotli').message).toMatch(/brotli.*zstd/);
    expect(usageError('mksquashfs_mem=256MB').message).toContain('256MB');
    expect(usageError('mksquashfs_mem=lots').message).toContain(`${SRC}:1`);
    expect(usageError('upper_dir=run/cairn').message).toMatch(/absolute/);
    expect(usageError('data_dir=').message).toMatch(/absolute/);
  });

  it('accepts memory sizes as mksquashfs takes them', () => {
    for (const m of ['512', '64K', '256M', '2G']) expect(parse(`mksquashfs_mem=${m}`).mksquashfsMem).toBe(m);
  });

  describe('excludes', () => {
    it('the first exclude= replaces the defaults, later ones add to it', () => {
      expect(parse('exclude=var/log/*\nexclude=srv/cache').excludes).toEqual(['var/log/*', 'srv/cache']);
    });

    it('an empty exclude= clears the list: nothing is left out', () => {
      expect(parse('exclude=').excludes).toEqual([]);
    });

    it('exclude_add= appends to the defaults', () => {
      expect(parse('exclude_add=var/log/*\nexclude_add=srv/x').excludes).toEqual([
        ...DEFAULT_EXCLUDES,
        'var/log/*',
        'srv/x',
      ]);
    });

    it('exclude_add= after exclude= appends to the replaced list', () => {
      expect(parse('exclude=tmp/*\nexclude_add=srv/x').excludes).toEqual(['tmp/*', 'srv/x']);
    });

    it('parsing never changes the defaults', () => {
      parse('exclude_add=var/log/*');
      parse('exclude=srv/*');
      expect(DEFAULTS.excludes).toEqual([...DEFAULT_EXCLUDES]);
      expect(parse('').excludes).toEqual([...DEFAULT_EXCLUDES]);
    });

    for (const bad of ['tmp/[ab]', 'var/../etc', 'tmp/@(a|b)', 'a\\b']) {
      it(`an invalid pattern (${bad}) is a UsageError naming the file`, () => {
        const e = usageError(`exclude_add=${bad}`);
        expect(e.message).toContain(SRC);
        expect(e.message).toContain(bad);
      });
    }

    it('an empty exclude_add= is a UsageError, not a pattern that matches nothing', () => {
      expect(usageError('exclude_add=').message).toContain(SRC);
    });
  });
});

describe('compression settings reach mksquashfs as it takes them', () => {
  it('passes a level to zstd and gzip only', async () => {
    const { mksquashfsArgs } = await import('../../src/save/squash.js');
    const args = (text: string) => mksquashfsArgs(parseConfig(text, 'cairn.conf'));
    expect(args('compression=zstd\ncompression_level=9\n')).toEqual(expect.arrayContaining(['-comp', 'zstd', '-Xcompression-level', '9']));
    expect(args('compression=gzip\ncompression_level=6\n')).toEqual(expect.arrayContaining(['-comp', 'gzip', '-Xcompression-level', '6']));
    for (const c of ['xz', 'lz4', 'lzo']) {
      const a = args(`compression=${c}\n`);
      expect(a).toEqual(expect.arrayContaining(['-comp', c]));
      expect(a.join(' ')).not.toMatch(/-Xcompression-level|-Xdict-size/);
    }
  });

  it('refuses a gzip level above 9', () => {
    expect(() => parseConfig('compression=gzip\ncompression_level=12\n', 'cairn.conf')).toThrow(/gzip takes a compression_level from 1 to 9/);
  });
});
