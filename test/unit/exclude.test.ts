import { describe, it, expect } from 'vitest';
import { DEFAULT_EXCLUDES, compileExcludes } from '../../src/save/exclude.js';
import { asBytePath } from '../../src/save/tree.js';

describe('default excludes', () => {
  const excluded = compileExcludes(DEFAULT_EXCLUDES);

  it('leave out what is in /tmp, hidden entries too, but keep /tmp itself', () => {
    expect(excluded('tmp')).toBe(false);
    expect(excluded('tmp/foo')).toBe(true);
    expect(excluded('tmp/.X11-unix')).toBe(true);
    expect(excluded('tmp/.ICE-unix')).toBe(true);
    expect(excluded('tmp/systemd-private-abc')).toBe(true);
  });

  it('leave out what is in /run but keep /run', () => {
    expect(excluded('run')).toBe(false);
    expect(excluded('run/sshd.pid')).toBe(true);
    expect(excluded('run/.lock')).toBe(true);
    expect(excluded('run/user')).toBe(true);
  });

  it('leave out downloaded packages but keep the apt cache directories', () => {
    expect(excluded('var/cache/apt/archives/vim_9.0_amd64.deb')).toBe(true);
    expect(excluded('var/cache/apt/archives/partial/x.deb')).toBe(true);
    expect(excluded('var/cache/apt/pkgcache.bin')).toBe(true);
    expect(excluded('var/cache/apt/archives')).toBe(false);
    expect(excluded('var/cache/apt/archives/partial')).toBe(false);
    expect(excluded('var/cache/apt/archives/lock')).toBe(false);
    expect(excluded('var/cache/apk/APKINDEX.tar.gz')).toBe(true);
    expect(excluded('var/cache/apk')).toBe(false);
  });

  it("leave out what is in a user's ~/.cache, not ~/.cache itself nor look-alike names", () => {
    expect(excluded('home/alice/.cache/mozilla')).toBe(true);
    expect(excluded('home/bob/.cache/thumbnails')).toBe(true);
    expect(excluded('root/.cache/pip')).toBe(true);
    expect(excluded('home/alice/.cache')).toBe(false);
    expect(excluded('home/alice/.cachex')).toBe(false);
    expect(excluded('home/alice/.cachex/x')).toBe(false);
    expect(excluded('home/alice/cache/x')).toBe(false);
    expect(excluded('home/alice/Documents/.cache/x')).toBe(false);
  });

  it('leave out lost+found at the top only', () => {
    expect(excluded('lost+found')).toBe(true);
    expect(excluded('lostfound')).toBe(false);
    expect(excluded('losttfound')).toBe(false);
    expect(excluded('home/lost+found')).toBe(false);
  });

  it("keep the user's own files", () => {
    for (const p of ['', 'etc', 'etc/hostname', 'home/alice/notes.txt', 'var/lib/apt/lists/x', 'root/.bashrc']) {
      expect(excluded(p), p).toBe(false);
    }
  });
});

describe('pattern syntax', () => {
  it('* stays inside one component', () => {
    const m = compileExcludes(['a/*']);
    expect(m('a/b')).toBe(true);
    expect(m('a/b/c')).toBe(false);
    expect(m('a')).toBe(false);
    expect(m('x/a/b')).toBe(false);
  });

  it('* and ? never match a leading dot unless the pattern starts with one', () => {
    expect(compileExcludes(['a/*'])('a/.hidden')).toBe(false);
    expect(compileExcludes(['a/?hidden'])('a/.hidden')).toBe(false);
    expect(compileExcludes(['a/*.deb'])('a/.x.deb')).toBe(false);
    expect(compileExcludes(['a/.*'])('a/.hidden')).toBe(true);
    expect(compileExcludes(['a/.*'])('a/visible')).toBe(false);
    // Only a leading dot is special.
    expect(compileExcludes(['a/*'])('a/x.y')).toBe(true);
    expect(compileExcludes(['a/x?y'])('a/x.y')).toBe(true);
  });

  it('? matches exactly one byte', () => {
    const m = compileExcludes(['f?o']);
    expect(m('foo')).toBe(true);
    expect(m('fo')).toBe(false);
    expect(m('fooo')).toBe(false);
    expect(m('f\xffo')).toBe(true);
    // "é" is two bytes in UTF-8: one ? is not enough, two are.
    expect(m(asBytePath('féo'))).toBe(false);
    expect(compileExcludes(['f??o'])(asBytePath('féo'))).toBe(true);
  });

  it('other characters are literal, regular-expression characters included', () => {
    expect(compileExcludes(['a.b'])('axb')).toBe(false);
    expect(compileExcludes(['a.b'])('a.b')).toBe(true);
    expect(compileExcludes(['a+b'])('aab')).toBe(false);
    expect(compileExcludes(['a$b^c'])('a$b^c')).toBe(true);
    expect(compileExcludes(['a{1}'])('a{1}')).toBe(true);
    expect(compileExcludes(['a{1}'])('a')).toBe(false);
    expect(compileExcludes(['a|b'])('a')).toBe(false);
  });

  it('leading and trailing slashes do not change a pattern', () => {
    expect(compileExcludes(['/tmp/*'])('tmp/x')).toBe(true);
    expect(compileExcludes(['var/log/'])('var/log')).toBe(true);
  });

  it('no patterns exclude nothing', () => {
    expect(compileExcludes([])('tmp/x')).toBe(false);
  });

  for (const bad of ['tmp/[ab]', 'tmp/a]', 'tmp/\\*', 'tmp/@(a|b)', 'tmp/!(x)', 'a/../etc', '..', './tmp', '', '/', 'a\nb']) {
    it(`rejects ${JSON.stringify(bad)} with an Error`, () => {
      expect(() => compileExcludes([bad])).toThrow(Error);
      expect(() => compileExcludes(['tmp/*', bad])).toThrow(/exclude pattern/);
    });
  }
});

describe('non-UTF-8 and non-ASCII names', () => {
  it('a name with an invalid UTF-8 byte, in latin1 byte form, matches', () => {
    const m = compileExcludes(['home/*/.cache/*', 'tmp/*']);
    const raw = Buffer.from([0x66, 0xff, 0xfe, 0x6f]).toString('latin1');
    expect(m(`tmp/${raw}`)).toBe(true);
    expect(m(`home/${raw}/.cache/x`)).toBe(true);
    expect(m(`home/${raw}/.cachex`)).toBe(false);
  });

  it('a UTF-8 pattern matches the byte form of the same name, not the decoded string', () => {
    const m = compileExcludes(['home/jürgen/Downloads']);
    expect(m(asBytePath('home/jürgen/Downloads'))).toBe(true);
    expect(m('home/jürgen/Downloads')).toBe(false);
    expect(m(asBytePath('home/jurgen/Downloads'))).toBe(false);
  });

  it('a name with a newline is matched by *', () => {
    expect(compileExcludes(['tmp/*'])('tmp/a\nb')).toBe(true);
  });
});
