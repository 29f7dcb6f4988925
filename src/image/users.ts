import { existsSync } from 'node:fs';
import { appendFile, chmod, chown, cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../lib/run.js';

export interface UserOptions {
  user: string;
  /** Set for the user and for root; undefined locks both (log in needs a password). */
  password?: string;
  shell: string;
}

/**
 * Adds the user account by writing the root's own passwd, group and shadow,
 * as useradd (Debian) and busybox adduser (Alpine) would: no program of the
 * root runs, so the same code serves a root whose userspace cannot run on
 * the build machine. The password is hashed with SHA-512 crypt, which both
 * bases' login and PAM accept.
 */
export async function addUser(root: string, o: UserOptions): Promise<{ uid: number; gid: number }> {
  const passwd = await table(root, 'etc/passwd');
  const group = await table(root, 'etc/group');
  const existing = passwd.find((f) => f[0] === o.user);
  let uid: number;
  let gid: number;
  if (existing) {
    uid = Number(existing[2]);
    gid = Number(existing[3]);
  } else {
    uid = firstFree(passwd.map((f) => Number(f[2])));
    gid = firstFree(group.map((f) => Number(f[2])), uid);
    const home = `/home/${o.user}`;
    await appendFile(join(root, 'etc/passwd'), `${o.user}:x:${uid}:${gid}:${o.user}:${home}:${o.shell}\n`);
    if (!group.some((f) => f[0] === o.user)) {
      await appendFile(join(root, 'etc/group'), `${o.user}:x:${gid}:\n`);
      // Debian keeps group passwords in gshadow; Alpine has none.
      if (existsSync(join(root, 'etc/gshadow'))) await appendFile(join(root, 'etc/gshadow'), `${o.user}:!::\n`);
    }
    await appendFile(join(root, 'etc/shadow'), `${o.user}:!:${daysSinceEpoch()}:0:99999:7:::\n`);
    await mkdir(join(root, 'home'), { recursive: true });
    if (existsSync(join(root, 'etc/skel'))) await cp(join(root, 'etc/skel'), join(root, home), { recursive: true });
    else await mkdir(join(root, home), { recursive: true });
    await chmod(join(root, home), 0o755);
    await run('chown', ['-R', `${uid}:${gid}`, join(root, home)], { timeoutMs: 60_000 });
  }
  if (o.password !== undefined) {
    const hash = (await run('openssl', ['passwd', '-6', '-stdin'], { input: o.password, timeoutMs: 30_000, hint: 'install openssl' })).stdout.trim();
    await setShadowPassword(root, [o.user, 'root'], hash);
  }
  await chown(join(root, 'etc/shadow'), 0, shadowGroup(group));
  await chmod(join(root, 'etc/shadow'), 0o640);
  return { uid, gid };
}

async function table(root: string, file: string): Promise<string[][]> {
  const text = existsSync(join(root, file)) ? await readFile(join(root, file), 'utf8') : '';
  return text.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(':'));
}

/** The lowest id from 1000 up that no entry uses (and `preferred` when it is free). */
function firstFree(used: number[], preferred?: number): number {
  const taken = new Set(used);
  if (preferred !== undefined && !taken.has(preferred)) return preferred;
  let id = 1000;
  while (taken.has(id)) id++;
  return id;
}

function daysSinceEpoch(): number {
  return Math.floor(Date.now() / 86_400_000);
}

/** shadow is readable by group shadow where the root has that group, else by root only. */
function shadowGroup(group: string[][]): number {
  const g = group.find((f) => f[0] === 'shadow');
  return g ? Number(g[2]) : 0;
}

async function setShadowPassword(root: string, users: string[], hash: string): Promise<void> {
  const path = join(root, 'etc/shadow');
  const lines = (await readFile(path, 'utf8')).split('\n');
  for (const user of users) {
    const i = lines.findIndex((l) => l.startsWith(`${user}:`));
    const fields = i >= 0 ? lines[i]!.split(':') : [user, '', String(daysSinceEpoch()), '0', '99999', '7', '', '', ''];
    fields[1] = hash;
    if (i >= 0) lines[i] = fields.join(':');
    else lines.splice(lines.length - (lines.at(-1) === '' ? 1 : 0), 0, fields.join(':'));
  }
  await writeFile(path, lines.join('\n'));
}
