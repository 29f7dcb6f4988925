import { existsSync } from 'node:fs';
import { appendFile, chmod, copyFile, mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PathError } from '../lib/errors.js';
import { log } from '../lib/log.js';
import { DATA, RUNTIME } from '../names.js';
import type { Base, Service } from './base.js';
import { installRuntime } from './codeCache.js';
import { addUser } from './users.js';

export interface ConfigureOptions {
  hostname: string;
  user: string;
  /** Set for the user and for root; undefined locks both (log in needs a password). */
  password?: string;
  /** The directory holding the early-boot module (init and lib/). */
  initDir: string;
  /** Size of the swap file made on first boot, in MiB; 0 for none. */
  swapMiB: number;
  /** The data partition's staging directory. */
  dataDir: string;
  /** apk: the repositories the image's apk uses. */
  repositories: string[];
}

/** Where the image keeps the checkpoint timer's loop (openrc/cairn-checkpoint.initd names it too). */
export const CHECKPOINT_LOOP = 'usr/lib/cairn/checkpoint-loop';

/** cairn's services and the runlevels they run in (the save's is the base's shutdown runlevel). */
function cairnServices(base: Base): Service[] {
  return [
    { name: 'cairn-save', runlevel: base.save.runlevel },
    { name: 'cairn-readonly', runlevel: base.save.runlevel },
    { name: 'cairn-userdirs', runlevel: 'default' },
    { name: 'cairn-swap', runlevel: 'default' },
    { name: 'cairn-boot-good', runlevel: 'default' },
    { name: 'cairn-checkpoint', runlevel: 'default' },
  ];
}

/** Turns a bootstrapped root of either base into a cairn system: runtime, services, console, user, package hooks. */
export async function configureRoot(root: string, base: Base, o: ConfigureOptions): Promise<void> {
  await writeFile(join(root, 'etc/hostname'), `${o.hostname}\n`);
  await writeFile(join(root, 'etc/hosts'), `127.0.0.1\tlocalhost\n127.0.1.1\t${o.hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n`);
  // The root is an overlay the initramfs mounts; nothing else to mount.
  await writeFile(join(root, 'etc/fstab'), '# cairn: / is an overlay made by the initramfs; /persist is the data partition.\n');
  const inittab = await readFile(join(root, 'etc/inittab'), 'utf8');
  // Both bases' inittabs mention ttyS0 in a comment only: look for a real entry.
  if (!/^[^#\n]*ttyS0/m.test(inittab)) {
    await appendFile(join(root, 'etc/inittab'), `\n# A login on the first serial port, for sticks in machines without a screen.\n${base.serialGetty}\n`);
  }

  // The runtime, run by the image's Node.js.
  await installRuntime(root);
  // The early-boot module, for initramfs builds on the running system.
  await copyTree(o.initDir, join(root, 'usr/share/cairn/initramfs'));
  await mkdir(join(root, dirname(RUNTIME.config)), { recursive: true });
  await writeFile(
    join(root, RUNTIME.config),
    '# cairn settings: see `cairn help save` and docs/saving.md. Defaults apply to what is not set.\n# generations=2\n# compression_level=3\n# minutes between checkpoints; 0 turns the timer off (read every minute)\n# checkpoint_interval=10\n',
  );

  // The services, from openrc/ in the checkout (or beside the bundle).
  const openrcDir = findOpenrcDir();
  const services = cairnServices(base);
  await mkdir(join(root, 'etc/conf.d'), { recursive: true });
  await mkdir(join(root, 'etc/init.d'), { recursive: true });
  for (const s of services) {
    await copyFile(join(openrcDir, `${s.name}.initd`), join(root, 'etc/init.d', s.name));
    await chmod(join(root, 'etc/init.d', s.name), 0o755);
    await copyFile(join(openrcDir, `${s.name}.confd`), join(root, 'etc/conf.d', s.name));
  }
  // The checkpoint timer's loop, which its service runs under supervise-daemon.
  await copyFile(join(openrcDir, 'cairn-checkpoint.loop'), join(root, CHECKPOINT_LOOP));
  await chmod(join(root, CHECKPOINT_LOOP), 0o755);
  await appendFile(join(root, 'etc/conf.d/cairn-userdirs'), `\nuser=${o.user}\n`);
  await appendFile(join(root, 'etc/conf.d/cairn-swap'), `\nswap_size_mib=${o.swapMiB}\n`);
  await appendFile(join(root, 'etc/conf.d/cairn-save'), `\n${base.save.order}`);
  await appendFile(join(root, 'etc/conf.d/cairn-readonly'), `\n${base.save.readOnlyOrder}`);
  for (const [name, lines] of Object.entries(base.confd)) await appendFile(join(root, 'etc/conf.d', name), lines);
  for (const s of services) await enableService(root, s);
  for (const s of base.systemServices) {
    if (existsSync(join(root, 'etc/init.d', s.name))) await enableService(root, s);
    else log.warn({ service: s.name, runlevel: s.runlevel }, 'the root has no such service: not enabled');
  }

  if (base.network) {
    await mkdir(join(root, 'etc/network'), { recursive: true });
    await writeFile(join(root, 'etc/network/interfaces'), base.network.interfaces);
    for (const [path, text] of Object.entries(base.network.files)) {
      await mkdir(join(root, dirname(path)), { recursive: true });
      await writeFile(join(root, path), text, { mode: 0o755 });
    }
  }

  // A failed shutdown save is said at every login until a save succeeds.
  await mkdir(join(root, 'etc/profile.d'), { recursive: true });
  await writeFile(join(root, 'etc/profile.d/cairn.sh'), loginNotice());

  await base.configurePackaging(root, { dataDir: o.dataDir, repositories: o.repositories });
  await addUser(root, { user: o.user, password: o.password, shell: base.loginShell });
}

/** /etc/profile.d/cairn.sh: login shells of both bases read it. */
export function loginNotice(): string {
  const record = `${RUNTIME.dataDir}/${DATA.saveFailed}`;
  const held = `${RUNTIME.dataDir}/${DATA.held}`;
  return `# cairn: a shutdown save that failed is said at every login until a save succeeds,
# states a boot fell back past until the user boots or releases them, a
# rollback by GRUB's boot counting, and a data partition the boot's check
# left read-only.
if [ -r ${record} ]; then
	printf '\n*** cairn: %s\n*** cairn save saves this session now; cairn status shows the saved states.\n\n' "$(cat ${record})" >&2
fi
cairn_held=$(grep -c '^[^#]' ${held} 2>/dev/null)
if [ "\${cairn_held:-0}" -gt 0 ]; then
	printf '\n*** cairn: %s saved state(s) could not be booted and are held: no save removes them.\n*** cairn status lists them; boot one from the GRUB menu, or cairn release lets saves prune them.\n\n' "$cairn_held" >&2
fi
unset cairn_held
if grep -q '^rollback=state' ${RUNTIME.bootRecord} 2>/dev/null; then
	printf '\n*** cairn: the newest state did not bring the system up in its tries, so GRUB booted the backup.\n*** The newest state is kept. cairn boot retry tries it again at the next boot; a save makes this session the newest.\n\n' >&2
fi
if grep -q '^data_check=errors left' ${RUNTIME.bootRecord} 2>/dev/null; then
	printf '\n*** cairn: the data partition has errors the boot did not repair: it is mounted read-only and nothing is saved.\n*** cairn status says more; boot with cairn.debug=1 and run e2fsck -f on it from the rescue shell.\n\n' >&2
fi
`;
}

/** What `rc-update add NAME LEVEL` does, without running the root's own OpenRC. */
async function enableService(root: string, s: Service): Promise<void> {
  const link = join(root, 'etc/runlevels', s.runlevel, s.name);
  await mkdir(dirname(link), { recursive: true });
  await rm(link, { force: true });
  await symlink(`/etc/init.d/${s.name}`, link);
}

function findOpenrcDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++, dir = dirname(dir)) {
    if (existsSync(join(dir, 'openrc', 'cairn-save.initd'))) return join(dir, 'openrc');
  }
  throw new PathError('openrc/', 'cairn\'s OpenRC services were not found beside the runtime');
}

async function copyTree(from: string, to: string): Promise<void> {
  await mkdir(to, { recursive: true });
  for (const e of await readdir(from, { withFileTypes: true })) {
    if (e.isDirectory()) await copyTree(join(from, e.name), join(to, e.name));
    else if (e.isFile()) await copyFile(join(from, e.name), join(to, e.name));
  }
}
