/**
 * A local apt repository signed with a key made for the test: apt checks
 * it the way it checks Debian's archive (InRelease signature, then the
 * checksums of Packages and of each .deb), so cairn's hook sees packages
 * exactly as from a real mirror. Needs apt-ftparchive (apt-utils) and gpg.
 */
import { execa } from 'execa';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';

export interface AptRepo {
  dir: string;
  /** The public key, binary, for signed-by. */
  key: string;
}

export async function makeAptRepo(dir: string, debs: readonly string[]): Promise<AptRepo> {
  await mkdir(dir, { recursive: true });
  for (const deb of debs) await copyFile(deb, join(dir, basename(deb)));
  const packages = await execa('apt-ftparchive', ['packages', '.'], { cwd: dir });
  await writeFile(join(dir, 'Packages'), `${packages.stdout}\n`);
  const release = await execa('apt-ftparchive', ['-o', 'APT::FTPArchive::Release::Origin=cairn-test', 'release', '.'], { cwd: dir });
  await writeFile(join(dir, 'Release'), `${release.stdout}\n`);

  const home = join(dir, '.gnupg');
  await mkdir(home, { mode: 0o700 });
  const gpg = (args: string[]) => execa('gpg', ['--homedir', home, '--batch', '--pinentry-mode', 'loopback', '--passphrase', '', ...args]);
  await gpg(['--quick-gen-key', 'cairn test repository <test@cairn.invalid>', 'rsa2048', 'sign', 'never']);
  await gpg(['--clearsign', '--output', join(dir, 'InRelease'), join(dir, 'Release')]);
  const key = join(dir, 'key.gpg');
  await gpg(['--output', key, '--export', 'test@cairn.invalid']);
  // gpg left an agent running for this home: it would outlive the test.
  await execa('gpgconf', ['--homedir', home, '--kill', 'gpg-agent'], { reject: false });
  return { dir, key };
}

/** The sources line for the repository as seen at `mountedAt` (its path inside a chroot or a VM). */
export function sourcesLine(mountedAt: string): string {
  return `deb [signed-by=${mountedAt}/key.gpg] file:${mountedAt} ./`;
}
