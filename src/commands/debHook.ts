import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { debsFromHookInput, postInvoke, preInstall } from '../packages/debian/hook.js';
import { resolveTarget, type TargetFlags } from '../packages/target.js';
import { withTargetOptions } from './target.js';

type HookFlags = TargetFlags & { root: string };

/** apt's hooks on a Debian-based cairn (/etc/apt/apt.conf.d/50cairn). Not for typing by hand. */
export function debHookCommand(): Command {
  const pre = withTargetOptions(
    new Command('pre-install')
      .description('DPkg::Pre-Install-Pkgs: reads .deb paths on stdin, installs kernels and firmware where cairn keeps them')
      .option('--root <dir>', 'the root dpkg installs into', '/'),
  ).action(async (flags: HookFlags) => {
    const debs = debsFromHookInput(readFileSync(0, 'utf8'));
    if (!debs.length) return;
    await preInstall(await resolveTarget(flags), debs, { root: flags.root });
  });
  const post = withTargetOptions(
    new Command('post-invoke')
      .description('DPkg::Post-Invoke: removes what kernel scripts left in /lib/modules for kernels cairn keeps in images')
      .option('--root <dir>', 'the root dpkg installed into', '/'),
  ).action(async (flags: HookFlags) => {
    await postInvoke(await resolveTarget(flags), { root: flags.root });
  });
  return new Command('deb-hook').description("apt's hooks on a Debian-based cairn (run by apt, not by hand)").addCommand(pre).addCommand(post);
}
