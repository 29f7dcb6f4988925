/**
 * The ACL record a save puts in a state (src/save/acl.ts): written so that
 * `setfattr --restore` reads back every name, whatever its bytes, and read
 * back exactly; and the verification's comparison of it with the upper
 * layer's ACLs.
 */
import { describe, expect, it } from 'vitest';
import { aclText, diffAcls, type Acls } from '../../src/save/acl.js';
import { formatXattrDump as formatAclDump, parseXattrDump as parseAclDump } from '../../src/save/xattrs.js';

// getfacl: user::rw-,user:1000:---,group::---,mask::---,other::--- (a 0600 file denying uid 1000)
const DENY = '0x0200000001000600ffffffff02000000e803000004000000ffffffff10000000ffffffff20000000ffffffff';
// user::rw-,user:1000:rw-,group::r--,mask::rw-,other::--- (mode 0660)
const SHARED = '0x0200000001000600ffffffff02000600e803000004000400ffffffff10000600ffffffff20000000ffffffff';
// default on a directory: user::rwx,user:1000:r-x,group::r-x,mask::r-x,other::r-x
const DEFAULT = '0x0200000001000700ffffffff02000500e803000004000500ffffffff10000500ffffffff20000500ffffffff';

const acls = (entries: [string, [string, string][]][]): Acls => new Map(entries.map(([rel, attrs]) => [rel, new Map(attrs)]));
/** Latin1 form of a name given as bytes, as tree.ts carries paths. */
const bytes = (...parts: (string | number[])[]) =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p)))).toString('latin1');

describe('the ACL record', () => {
  const odd = bytes('home/we\nird\\name ', [0xff], ' é\r');
  const sample = acls([
    ['', [['system.posix_acl_access', DENY]]],
    ['home/user/secret', [['system.posix_acl_access', DENY]]],
    ['home/user/project', [['system.posix_acl_default', DEFAULT], ['system.posix_acl_access', SHARED]]],
    [odd, [['system.posix_acl_access', SHARED]]],
  ]);

  it('reads back exactly what was written, odd names and the root included', () => {
    expect(parseAclDump(formatAclDump(sample))).toEqual(sample);
  });

  it('is getfattr --dump text: one line per name, every byte outside printable ASCII and the backslash as \\ooo, "." for the root', () => {
    const text = formatAclDump(sample).toString('latin1');
    expect(text).toBe(
      [
        '# file: .',
        `system.posix_acl_access=${DENY}`,
        '',
        '# file: home/user/project',
        `system.posix_acl_access=${SHARED}`,
        `system.posix_acl_default=${DEFAULT}`,
        '',
        '# file: home/user/secret',
        `system.posix_acl_access=${DENY}`,
        '',
        '# file: home/we\\012ird\\134name\\040\\377\\040\\303\\251\\015',
        `system.posix_acl_access=${SHARED}`,
        '',
        '',
      ].join('\n'),
    );
    expect([...text].every((c) => c.charCodeAt(0) < 0x80)).toBe(true);
  });

  it('leaves out entries without an ACL', () => {
    expect(formatAclDump(acls([['a', []]])).length).toBe(0);
  });
});

describe('comparing the record with the upper layer', () => {
  const upper = acls([
    ['secret', [['system.posix_acl_access', DENY]]],
    ['shared', [['system.posix_acl_access', SHARED]]],
    ['tmp/skipped', [['system.posix_acl_access', DENY]]],
  ]);
  const saved = (rel: string) => !rel.startsWith('tmp/');
  const where = { saved, inImage: saved };

  it('finds nothing when the record holds the same ACLs', () => {
    expect(diffAcls(upper, new Map([...upper].filter(([rel]) => saved(rel))), where)).toEqual([]);
  });

  it('names each entry whose ACL the record lacks or holds otherwise, in getfacl words', () => {
    const image = acls([['shared', [['system.posix_acl_access', DENY]]], ['extra', [['system.posix_acl_default', DEFAULT]]]]);
    expect(diffAcls(upper, image, where)).toEqual([
      { rel: 'secret', expected: 'access user::rw-,user:1000:---,group::---,mask::---,other::---', actual: '(none)' },
      {
        rel: 'shared',
        expected: 'access user::rw-,user:1000:rw-,group::r--,mask::rw-,other::---',
        actual: 'access user::rw-,user:1000:---,group::---,mask::---,other::---',
      },
      { rel: 'extra', expected: '(none)', actual: 'default user::rwx,user:1000:r-x,group::r-x,mask::r-x,other::r-x' },
    ]);
  });

  it('ignores what the save leaves out', () => {
    expect(diffAcls(upper, acls([['secret', [['system.posix_acl_access', DENY]]], ['shared', [['system.posix_acl_access', SHARED]]]]), where)).toEqual([]);
  });

  it('names an ACL recorded for a path the image does not hold: at boot it could lead through a symbolic link', () => {
    const record = acls([
      ['secret', [['system.posix_acl_access', DENY]]],
      ['shared', [['system.posix_acl_access', SHARED]]],
      ['tmp/skipped', [['system.posix_acl_access', DENY]]],
      ['dir/was-a-dir/shadow', [['system.posix_acl_access', SHARED]]],
    ]);
    const inImage = (rel: string) => saved(rel) && !rel.startsWith('dir/');
    expect(diffAcls(upper, record, { saved, inImage })).toEqual([
      { rel: 'tmp/skipped', expected: '(none: the image does not hold it)', actual: 'access user::rw-,user:1000:---,group::---,mask::---,other::---' },
      { rel: 'dir/was-a-dir/shadow', expected: '(none: the image does not hold it)', actual: 'access user::rw-,user:1000:rw-,group::r--,mask::rw-,other::---' },
    ]);
  });

  it('spells a value that is not an ACL as its hex', () => {
    expect(aclText('0x0300')).toBe('0x0300');
    expect(aclText(DENY)).toBe('user::rw-,user:1000:---,group::---,mask::---,other::---');
  });
});
