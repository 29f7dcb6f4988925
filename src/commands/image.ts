import { DEFAULT_BOOT_TRIES, parseBootTries } from '../boot/tries.js';
import { Command } from 'commander';
import { randomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { writeFileDurably } from '../lib/durable.js';
import { PathError, UsageError } from '../lib/errors.js';
import { readSecretLine } from '../lib/secretFile.js';
import { formatBytes, formatSeconds } from '../lib/format.js';
import { DEFAULT_ALPINE_RELEASE } from '../image/alpine.js';
import { buildImage, MIN_SIZE_MIB, type ImageOptions } from '../image/build.js';
import { STICK_KDF } from '../image/luks.js';
import { terminalProgress } from '../ui/progress.js';

interface BuildFlags {
  base: string;
  output: string;
  size: string;
  user: string;
  password?: string;
  passwordFile?: string;
  lockAccounts?: boolean;
  hostname: string;
  upper: string;
  grow: boolean;
  bootTries: string;
  kernel?: string;
  suite: string;
  mirror?: string;
  repository?: string[];
  release: string;
  apk?: string;
  apkKeys?: string;
  cache: string;
  work?: string;
  console: string;
  encrypt?: boolean;
  passphraseFile?: string;
  luksIterTime?: string;
  swap: string;
  json?: boolean;
}

export function imageCommand(): Command {
  const image = new Command('image').description('build stick images');
  image
    .command('build')
    .description('build a stick image: GRUB for UEFI and BIOS, the kernel and cairn\'s initramfs, the base system and its images')
    .requiredOption('-o, --output <file>', 'the image file to write (.img)')
    .option('--base <base>', 'debian or alpine', 'debian')
    .option('--size <MiB>', `image size in MiB (at least ${MIN_SIZE_MIB})`, '4096')
    .option('--user <name>', 'the user account', 'cairn')
    .option('--password-file <file>', "password of the user and of root, the file's first line ('-': standard input); without it (or --password) one is made up, printed and kept in <output>.password, readable by root only")
    .option('--password <password>', 'the password on the command line (every user of this machine can read it there: prefer --password-file)')
    .option('--lock-accounts', 'no password: root and the user cannot log in on a console')
    .option('--hostname <name>', 'the host name', 'cairn')
    .option('--upper <type>', 'where changes live while running: zram or tmpfs', 'zram')
    .option('--kernel <package>', 'the kernel package (debian: linux-image-amd64; alpine: linux-lts, or linux-virt for VMs)')
    .option('--suite <suite>', 'debian: the release', 'bookworm')
    .option('--mirror <url>', 'debian: the archive (default: the one this machine\'s apt uses)')
    .option('--repository <url|dir>', 'alpine: a repository, URL or local directory; repeat for more (default: main and community of --release on Alpine\'s CDN)', (v: string, all: string[] = []) => [...all, v])
    .option('--release <version>', 'alpine: the release of the default repositories', DEFAULT_ALPINE_RELEASE)
    .option('--apk <path>', 'alpine: the apk-tools program to bootstrap with (default: apk or apk.static on PATH)')
    .option('--apk-keys <dir>', 'alpine: the trusted signing keys of the repositories', '/etc/apk/keys')
    .option('--cache <dir>', 'downloaded packages and bootstrapped roots, reused by the next build', '/var/cache/cairn-build')
    .option('--work <dir>', 'scratch space (default: <cache>/work)')
    .option('--console <which>', 'where boot messages and prompts go: screen or serial', 'screen')
    .option('--encrypt', 'encrypt the data partition (LUKS2, aes-xts-plain64, argon2id); the boot asks for the passphrase')
    .option('--passphrase-file <file>', "with --encrypt: the passphrase, the file's first line ('-': standard input)")
    .option('--luks-iter-time <ms>', 'with --encrypt: milliseconds this machine spends turning the passphrase into the key; a slower machine takes longer at every boot', String(STICK_KDF.iterTimeMs))
    .option('--no-grow', 'the data partition keeps the image\'s size on a larger stick (cairn.grow=0); by default the first boot grows it to fill the stick')
    .option('--boot-tries <n>', 'boot counting: boots GRUB tries a new kernel or newest state before it rolls back by itself (0: off)', String(DEFAULT_BOOT_TRIES))
    .option('--swap <MiB>', 'swap file made on the data partition at first boot (0: none)', '512')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', `
An encrypted stick: the data partition becomes LUKS2 labelled cairn-data;
the passphrase is never given on the command line, where other users of
this machine could read it:
  cairn image build -o cairn.img --encrypt --passphrase-file - < passphrase.txt
Building one needs cryptsetup on this machine, but no device-mapper.`)
    .action(async (f: BuildFlags) => {
      if (!['debian', 'alpine'].includes(f.base)) throw new UsageError(`--base "${f.base}" is not debian or alpine`);
      if (!['zram', 'tmpfs'].includes(f.upper)) throw new UsageError(`--upper "${f.upper}" is not zram or tmpfs`);
      if (!['screen', 'serial'].includes(f.console)) throw new UsageError(`--console "${f.console}" is not screen or serial`);
      if (!/^[0-9]+$/.test(f.size)) throw new UsageError(`--size "${f.size}" is not a number of MiB`);
      if (!/^[0-9]+$/.test(f.swap)) throw new UsageError(`--swap "${f.swap}" is not a number of MiB`);
      if (f.encrypt && f.passphraseFile === undefined) {
        throw new UsageError('--encrypt needs a passphrase', { hint: "pass --passphrase-file FILE ('-' reads it from standard input)" });
      }
      if (!f.encrypt && f.passphraseFile !== undefined) throw new UsageError('--passphrase-file is for an encrypted image: add --encrypt');
      if (!/^[1-9][0-9]*$/.test(f.luksIterTime ?? '')) throw new UsageError(`--luks-iter-time "${f.luksIterTime}" is not a number of milliseconds`);
      // Checked before minutes of bootstrapping, not when the image is written.
      const outDir = dirname(resolve(f.output));
      if (!statSync(outDir, { throwIfNoEntry: false })?.isDirectory()) {
        throw new PathError(outDir, 'no such directory for the image', `create it first (mkdir -p ${outDir})`);
      }
      const given = [f.password !== undefined && '--password', f.passwordFile !== undefined && '--password-file', f.lockAccounts && '--lock-accounts'].filter(Boolean);
      if (given.length > 1) throw new UsageError(`${given.join(' and ')} contradict each other: give one`);
      if (f.passwordFile === '-' && f.passphraseFile === '-') {
        throw new UsageError('the password and the passphrase cannot both come from standard input', { hint: 'give one of them in a file' });
      }
      if (f.password === '') throw new UsageError('--password is empty', { hint: 'give a password, or --lock-accounts to lock root and the user' });
      const passphrase = f.passphraseFile === undefined ? undefined : await readSecretLine(f.passphraseFile, 'passphrase');
      const password = f.passwordFile !== undefined ? await readSecretLine(f.passwordFile, 'password') : f.password;
      // A line end would split the shadow file's lines, and no console can type one.
      if (password !== undefined && /[\r\n]/.test(password)) throw new UsageError('the password holds a line end: a password is one line');
      // Unattended and nothing given: a made-up password, never a stick nobody can log into by accident.
      const madeUp = password === undefined && !f.lockAccounts ? randomBytes(9).toString('base64url') : undefined;
      const progress = terminalProgress(!f.json);
      const cache = resolve(f.cache);
      const opts: ImageOptions = {
        base: f.base as ImageOptions['base'],
        output: resolve(f.output),
        sizeMiB: Number(f.size),
        user: f.user,
        password: password ?? madeUp,
        hostname: f.hostname,
        upper: f.upper as ImageOptions['upper'],
        grow: f.grow,
        bootTries: parseBootTries(f.bootTries),
        kernelPackage: f.kernel ?? (f.base === 'alpine' ? 'linux-lts' : 'linux-image-amd64'),
        suite: f.suite,
        mirror: f.mirror,
        repositories: f.repository,
        alpineRelease: f.release,
        apk: f.apk,
        apkKeys: f.apkKeys,
        cacheDir: cache,
        workDir: resolve(f.work ?? `${cache}/work`),
        primaryConsole: f.console as ImageOptions['primaryConsole'],
        luks: f.encrypt === true,
        passphrase,
        luksKdf: { ...STICK_KDF, iterTimeMs: Number(f.luksIterTime) },
        swapMiB: Number(f.swap),
        onPhase: (p) => progress.phase(`image: ${p}`),
      };
      try {
        const r = await buildImage(opts);
        progress.done();
        const passwordFile = madeUp === undefined ? undefined : `${r.output}.password`;
        if (passwordFile) await writeFileDurably(passwordFile, `${madeUp}\n`, 0o600);
        const login = f.lockAccounts
          ? `root and ${f.user} are locked (--lock-accounts): nobody can log in on a console`
          : passwordFile
            ? `log in as ${f.user} or root with the password ${madeUp} (kept in ${passwordFile}, readable by root only)`
            : `log in as ${f.user} or root with the password given`;
        process.stdout.write(
          f.json
            ? `${JSON.stringify({ ...r, passwordFile, accountsLocked: f.lockAccounts === true }, null, 2)}\n`
            : `built ${r.output} (${formatBytes(r.bytes)}, kernel ${r.kernelVersion}) in ${formatSeconds(r.seconds)}\n${login}\n`,
        );
      } finally {
        progress.done();
      }
    });
  return image;
}
