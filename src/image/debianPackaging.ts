import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DPKG_EXCLUDES } from '../packages/debian/hook.js';
import type { PackagingOptions } from './base.js';
import { inChroot, withChroot } from './chroot.js';

/**
 * Debian's package backend on a stick: apt hands cairn every package before
 * dpkg runs, dpkg leaves the paths cairn keeps in images of their own
 * (src/packages/debian/hook.ts), and the tools that would write boot files
 * into the RAM layer are set aside.
 */
export async function configureDebianPackaging(root: string, _o: PackagingOptions): Promise<void> {
  await writeDebianPackageHooks(root);
  await withChroot(root, [], async () => {
    for (const tool of SET_ASIDE) {
      await inChroot(root, ['dpkg-divert', '--local', '--rename', '--divert', `${tool.path}.distrib`, '--add', tool.path]);
      await writeFile(join(root, tool.path), setAsideStub(tool), { mode: 0o755 });
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
