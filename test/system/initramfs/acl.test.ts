/**
 * The ACLs a state records (docs/state-format.md) put back after the unpack
 * (initramfs/lib/acl.sh), as the boot does: busybox sh, a tmpfs upper layer,
 * a real squashfs state. The record is written here from the format alone.
 */
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyValues, requireRoot, requireTools } from '../../helpers/initramfs-env.js';
import { buildState, Sandbox, sealTree, writeStateTree } from './fixtures.js';

let sb: Sandbox;
const img: Record<string, string> = {};

// user::rw-,user:1000:---,group::---,mask::---,other::--- on a 0600 file.
const DENY = '0x0200000001000600ffffffff02000000e803000004000000ffffffff10000000ffffffff20000000ffffffff';
// user::rwx,group::r-x,group:100:rwx,mask::rwx,other::--- on a 0770 directory.
const GROUP = '0x0200000001000700ffffffff04000500ffffffff080007006400000010000700ffffffff20000000ffffffff';
// default:user::rwx,default:user:1000:r-x,default:group::r-x,default:mask::r-x,default:other::r-x
const DEFAULT = '0x0200000001000700ffffffff02000500e803000004000500ffffffff10000500ffffffff20000500ffffffff';

/** A sealed state made of writeStateTree's files, a 0600 file, a 0770 dir and the ACL record RECORD. */
async function stateWithRecord(name: string, record: string): Promise<string> {
  const tree = sb.path(`tree-${name}`);
  await writeStateTree(tree, name);
  await writeFile(join(tree, 'home/user/secret'), 'secret\n', { mode: 0o600 });
  await mkdir(join(tree, 'home/user/team'));
  await chmod(join(tree, 'home/user/team'), 0o770);
  await writeFile(join(tree, '.cairn-acls'), record, { mode: 0o600 });
  const out = sb.path(`${name}.squashfs`);
  await sealTree(tree, out, name);
  return out;
}

beforeAll(async () => {
  requireRoot('mounts');
  requireTools(['busybox', 'unshare', 'mksquashfs', 'unsquashfs', 'setfattr', 'getfattr']);
  sb = await Sandbox.create('acl');
  img.acls = await stateWithRecord(
    'acls',
    [
      '# file: home/user/secret',
      `system.posix_acl_access=${DENY}`,
      '',
      '# file: home/user/team',
      `system.posix_acl_access=${GROUP}`,
      `system.posix_acl_default=${DEFAULT}`,
      '',
    ].join('\n'),
  );
  img.bad = await stateWithRecord('bad', `# file: home/user/secret\nsystem.posix_acl_access=0xnothex\n\n`);
  // A path the state does not hold: a save never records one (its verification refuses it).
  img.gone = await stateWithRecord('gone', `# file: home/user/gone/file\nsystem.posix_acl_access=${DENY}\n\n`);
  img.old = sb.path('old.squashfs');
  await buildState(sb, img.old, 'old');
});

afterAll(async () => {
  await sb?.cleanup();
});

/** Unpacks STATE into a tmpfs upper layer with state_unpack; what it said and the upper's ACLs. */
async function unpack(state: string) {
  const root = await sb.root(`root-${state.replace(/\W/g, '')}`);
  const r = await sb.lib(
    `
upper_create tmpfs ${64 << 20} || exit 12
why=$(state_unpack "$STATE" "$ROOT$CAIRN_UPPER_DIR"); echo "status=$?"
echo "why=$why"
cd "$ROOT$CAIRN_UPPER_DIR" || exit 13
echo "record=$(ls -A | grep -c -x -F "$CAIRN_ACL_DUMP")"
echo "hostname=$(cat etc/hostname)"
acl() { getfattr -e hex -n "system.posix_acl_$1" "$2" 2>/dev/null | sed -n "s/^system.posix_acl_$1=//p"; }
for f in home/user/secret home/user/team; do
  echo "mode $f=$(stat -c %a "$f" 2>/dev/null)"
  echo "acl $f=$(acl access "$f")"
done
echo "default=$(acl default home/user/team)"
exit 0
`,
    { root, env: { STATE: state } },
  );
  expect(r.exitCode, r.stderr).toBe(0);
  return keyValues(r.stdout);
}

describe('ACLs at boot', () => {
  it("puts back a state's ACLs, keeps its modes and removes the record", async () => {
    const out = await unpack(img.acls!);
    expect(out.status, out.why).toBe('0');
    expect(out.record).toBe('0');
    expect(out['mode home/user/secret']).toBe('600');
    expect(out['mode home/user/team']).toBe('770');
    expect(out.default).toBe(DEFAULT);
    expect(out['acl home/user/secret']).toBe(DENY);
    expect(out['acl home/user/team']).toBe(GROUP);
  });

  it('unpacks a state saved before cairn kept ACLs as before', async () => {
    const out = await unpack(img.old!);
    expect(out.status, out.why).toBe('0');
    expect(out.hostname).toBe('old');
    expect(out.record).toBe('0');
  });

  it('fails the unpack, saying why, when the record cannot be applied', async () => {
    const out = await unpack(img.bad!);
    expect(out.status).toBe('1');
    expect(out.why).toMatch(/^could not have its ACLs set again \(.*bad input encoding.*\)$/);
  });

  it('fails the unpack when the record names a path the state does not hold', async () => {
    const out = await unpack(img.gone!);
    expect(out.status).toBe('1');
    expect(out.why).toMatch(/^could not have its ACLs set again \(.*home\/user\/gone\/file: No such file or directory\)$/);
  });
});
