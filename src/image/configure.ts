import { existsSync } from 'node:fs';
import { appendFile, chmod, copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PathError } from '../lib/errors.js';
import { RUNTIME } from '../names.js';
import { DPKG_EXCLUDES } from '../packages/debian/hook.js';
import { inChroot, withChroot } from './chroot.js';

export interface ConfigureOptions {
  hostname: string;
  user: string;
  /** Set for the user and for root; undefined locks both (log in needs a password). */
  password?: string;
  /** The directory holding the early-boot module (init and lib/). */
  initDir: string;
  /** Size of the swap file made on first boot, in MiB; 0 for none. */
  swapMiB: number;
}

/** Where the bundled runtime is: the running file when bundled, else dist/ of the checkout. */
export function runtimeBundle(): string {
  const self = fileURLToPath(import.meta.url);
  if (self.endsWith('cairn.mjs')) return self;
  let dir = dirname(self);
  for (let i = 0; i < 5; i++, dir = dirname(dir)) {
    if (existsSync(join(dir, 'dist', 'cairn.mjs'))) return join(dir, 'dist', 'cairn.mjs');
  }
  throw new PathError('dist/cairn.mjs', 'the bundled runtime was not found', 'run npm run build first');
}

/** OpenRC services and the runlevels they run in, as Debian's OpenRC names them. */
const SERVICES: { name: string; runlevels: string[] }[] = [
  // Debian's runlevel 0 and 6 go through "off", where processes are killed
  // and file systems unmounted.
  { name: 'cairn-save', runlevels: ['off'] },
  { name: 'cairn-userdirs', runlevels: ['default'] },
  { name: 'cairn-swap', runlevels: ['default'] },
  { name: 'cairn-kernel', runlevels: ['default'] },
];

/** Turns a Debian root into a cairn system: runtime, services, console, user. */
export async function configureDebianRoot(root: string, o: ConfigureOptions): Promise<void> {
  await writeFile(join(root, 'etc/hostname'), `${o.hostname}\n`);
  await writeFile(join(root, 'etc/hosts'), `127.0.0.1\tlocalhost\n127.0.1.1\t${o.hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n`);
  // The root is an overlay the initramfs mounts; nothing else to mount.
  await writeFile(join(root, 'etc/fstab'), '# cairn: / is an overlay made by the initramfs; /persist is the data partition.\n');
  const inittab = await readFile(join(root, 'etc/inittab'), 'utf8');
  // Debian's inittab mentions ttyS0 in a comment only: look for a real entry.
  if (!/^[^#\n]*ttyS0/m.test(inittab)) {
    await appendFile(join(root, 'etc/inittab'), '\n# A login on the first serial port, for sticks in machines without a screen.\nT0:2345:respawn:/sbin/getty -L 115200 ttyS0 vt100\n');
  }

  // The runtime: one file, run by the image's Node.js.
  await mkdir(join(root, 'usr/lib/cairn'), { recursive: true });
  await copyFile(runtimeBundle(), join(root, 'usr/lib/cairn/cairn.mjs'));
  await writeFile(join(root, 'usr/bin/cairn'), '#!/bin/sh\nexec node /usr/lib/cairn/cairn.mjs "$@"\n', { mode: 0o755 });
  // The early-boot module, for initramfs builds on the running system.
  await copyTree(o.initDir, join(root, 'usr/share/cairn/initramfs'));
  await mkdir(join(root, dirname(RUNTIME.config)), { recursive: true });
  await writeFile(
    join(root, RUNTIME.config),
    '# cairn settings: see `cairn help save` and docs/saving.md. Defaults apply to what is not set.\n# generations=2\n# compression_level=3\n',
  );

  // The services, from openrc/ in the checkout (or beside the bundle).
  const openrcDir = findOpenrcDir();
  await mkdir(join(root, 'etc/conf.d'), { recursive: true });
  for (const s of SERVICES) {
    await copyFile(join(openrcDir, `${s.name}.initd`), join(root, 'etc/init.d', s.name));
    await chmod(join(root, 'etc/init.d', s.name), 0o755);
    await copyFile(join(openrcDir, `${s.name}.confd`), join(root, 'etc/conf.d', s.name));
  }
  await appendFile(join(root, 'etc/conf.d/cairn-userdirs'), `\nuser=${o.user}\n`);
  await appendFile(join(root, 'etc/conf.d/cairn-swap'), `\nswap_size_mib=${o.swapMiB}\n`);
  await appendFile(join(root, 'etc/conf.d/cairn-save'), '\n# Debian\'s OpenRC shuts down through the "off" runlevel.\nsave_after=\nsave_before=umountfs\n');

  await writeDebianPackageHooks(root);

  await withChroot(root, [], async () => {
    for (const tool of SET_ASIDE) {
      await inChroot(root, ['dpkg-divert', '--local', '--rename', '--divert', `${tool.path}.distrib`, '--add', tool.path]);
      await writeFile(join(root, tool.path), setAsideStub(tool), { mode: 0o755 });
    }
    for (const s of SERVICES) for (const level of s.runlevels) await inChroot(root, ['rc-update', 'add', s.name, level]);
    const exists = await inChroot(root, ['id', '-u', o.user], { okExitCodes: [1] });
    if (exists.exitCode !== 0) await inChroot(root, ['useradd', '--create-home', '--shell', '/bin/bash', o.user]);
    if (o.password !== undefined) {
      await inChroot(root, ['chpasswd'], { input: `${o.user}:${o.password}\nroot:${o.password}\n` });
    }
  });
}

/**
 * Debian's tools that would write boot files into the RAM layer, set aside
 * with dpkg-divert (the packages that ship them stay installable, and their
 * scripts find a stub that does nothing). initramfs-tools stays installed
 * because kernel packages depend on it.
 */
export const SET_ASIDE = [
  { path: '/usr/sbin/update-initramfs', instead: 'cairn builds the initramfs when it installs a kernel' },
  { path: '/usr/sbin/grub-install', instead: "cairn writes GRUB's boot files itself after apt installs a GRUB package (cairn grub update)" },
  { path: '/usr/sbin/grub-mkconfig', instead: "cairn keeps its own menu on the ESP (grub/grub.cfg)" },
] as const;

function setAsideStub(tool: (typeof SET_ASIDE)[number]): string {
  const name = tool.path.split('/').pop();
  return `#!/bin/sh
# cairn: set aside by dpkg-divert; Debian's own is ${name}.distrib.
echo "${name}: ${tool.instead}; nothing to do" >&2
exit 0
`;
}

/**
 * apt hands cairn every package before dpkg runs, and dpkg leaves the paths
 * cairn keeps in images of their own (src/packages/debian/hook.ts).
 */
async function writeDebianPackageHooks(root: string): Promise<void> {
  await mkdir(join(root, 'etc/apt/apt.conf.d'), { recursive: true });
  await writeFile(
    join(root, 'etc/apt/apt.conf.d/50cairn'),
    [
      '// cairn: kernels and firmware go into images on the stick, not into the RAM layer.',
      'DPkg::Pre-Install-Pkgs { "/usr/bin/cairn deb-hook pre-install"; };',
      'DPkg::Post-Invoke { "/usr/bin/cairn deb-hook post-invoke"; };',
      '',
    ].join('\n'),
  );
  await mkdir(join(root, 'etc/dpkg/dpkg.cfg.d'), { recursive: true });
  await writeFile(
    join(root, 'etc/dpkg/dpkg.cfg.d/cairn'),
    ['# cairn keeps these in images of their own; apt hands it the packages first.', ...DPKG_EXCLUDES.map((p) => `path-exclude=${p}`), ''].join('\n'),
  );
  // No /vmlinuz symlinks in the RAM layer: the kernels are on the ESP.
  await writeFile(join(root, 'etc/kernel-img.conf'), 'do_symlinks = no\n');
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
