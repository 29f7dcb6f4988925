import { DEFAULT_BOOT_TRIES, parseBootTries } from '../boot/tries.js';
import { Command, Option } from 'commander';
import { resolveContext, type GlobalOptions } from '../context.js';
import { UsageError } from '../lib/errors.js';
import { LABELS } from '../names.js';
import { runGrubConfig } from '../grub/config.js';
import { GRUB_LIB } from '../grub/core.js';
import { updateGrubBootFiles } from '../packages/grub.js';
import { resolveTarget } from '../packages/target.js';
import { withTargetOptions, type TargetFlags } from './target.js';
import { DEFAULT_SETTINGS, type BootSettings, type EspLocator, type PrimaryConsole, type UpperType } from '../grub/menu.js';

interface GrubConfigFlags {
  output: string;
  data?: string;
  flavor: string;
  kernel?: string;
  initrd?: string;
  espSpec: string;
  dataSpec: string;
  upperType: UpperType;
  upperSize?: string;
  grow: boolean;
  bootTries: string;
  timeout: string;
  serialSpeed: string;
  primaryConsole: PrimaryConsole;
  default: string;
  full?: boolean;
  json?: boolean;
}

const SERIAL_SPEEDS = ['9600', '19200', '38400', '57600', '115200'];

export function grubCommand(global: () => GlobalOptions): Command {
  return new Command('grub')
    .description('the GRUB boot menu and boot files')
    .addCommand(configCommand(global))
    .addCommand(updateCommand());
}

function updateCommand(): Command {
  return withTargetOptions(
    new Command('update')
      .description(
        'remake GRUB\'s boot files on the stick (EFI/BOOT/BOOTX64.EFI, the BIOS core) from the installed GRUB, where its version changed; ' +
          'cairn\'s menu stays. The package hooks run this after a GRUB package is installed.',
      )
      .option('--lib <dir>', 'GRUB\'s module directories', GRUB_LIB)
      .option('--disk <path>', 'the disk whose BIOS boot partition holds the BIOS core (default: the ESP\'s disk)')
      .option('--force', 'rewrite the boot files even where the recorded version is the installed one')
      .option('--json', 'print the result as JSON'),
  ).action(async (flags: TargetFlags & { lib: string; disk?: string; force?: boolean; json?: boolean }) => {
    const updates = await updateGrubBootFiles(await resolveTarget(flags), { libDir: flags.lib, disk: flags.disk, force: flags.force });
    if (flags.json) process.stdout.write(`${JSON.stringify(updates, null, 2)}\n`);
    else if (!updates.length) process.stdout.write(`GRUB's boot files are up to date with ${flags.lib}\n`);
    else for (const u of updates) process.stdout.write(`GRUB ${u.platform} ${u.previous ?? '(unrecorded)'} -> ${u.version}: ${u.written}\n`);
  });
}

function configCommand(global: () => GlobalOptions): Command {
  return new Command('config')
    .description(
      'write grub.cfg: entries for the newest state, the backup, a clean boot and each older state on the data partition',
    )
    .requiredOption('-o, --output <file>', 'where to write grub.cfg, e.g. /boot/efi/grub/grub.cfg ("-" prints it instead)')
    .option('--data <dir>', 'the mounted data partition whose states are listed (default: the running system\'s)')
    .option('--flavor <name>', 'the kernel flavor: boots /vmlinuz-<name> with /initramfs-<name> from the ESP', 'lts')
    .option('--kernel <path>', 'the kernel\'s path on the ESP (default: /vmlinuz-<flavor>)')
    .option('--initrd <path>', 'the initramfs\'s path on the ESP (default: /initramfs-<flavor>)')
    .option('--esp-spec <LABEL=...|UUID=...>', 'how GRUB finds the ESP (never by disk order)', `LABEL=${LABELS.esp}`)
    .option('--data-spec <spec>', 'cairn.data: how the initramfs finds the data partition (LABEL=..., UUID=... or /dev/...)', DEFAULT_SETTINGS.dataSpec)
    .addOption(new Option('--upper-type <type>', 'cairn.upper: what the RAM layer lives on').choices(['zram', 'tmpfs']).default('zram'))
    .option('--upper-size <size>', 'cairn.upper_size: the RAM layer\'s limit, like 2G or 50% (default: the initramfs\'s, 50% of RAM)')
    .option('--no-grow', 'cairn.grow=0: the data partition keeps its size on a larger stick (by default its first boot grows it to fill the stick)')
    .option('--boot-tries <n>', 'boot counting: boots GRUB tries a new kernel or newest state before it rolls back by itself (0: off)', String(DEFAULT_BOOT_TRIES))
    .option('--timeout <seconds>', 'seconds the menu waits before it boots the default entry', '3')
    .addOption(new Option('--serial-speed <baud>', 'the first serial port\'s speed, for GRUB and the kernel').choices(SERIAL_SPEEDS).default('115200'))
    .addOption(
      new Option('--primary-console <where>', 'which console init and its prompts (a LUKS passphrase) use; the kernel logs to both')
        .choices(['serial', 'screen'])
        .default('serial'),
    )
    .option('--default <boot>', 'the entry booted when the timeout runs out: default, backup, clean or gen-<n>', 'default')
    .option('--full', 'read whole images to check their checksums before marking them (default: the seals only)')
    .option('--json', 'print the menu as JSON')
    .action(async (flags: GrubConfigFlags) => {
      const ctx = await resolveContext(global(), { data: flags.data }, { upper: false });
      const toStdout = flags.output === '-';
      const report = await runGrubConfig({
        dataDir: ctx.dataDir,
        output: toStdout ? undefined : flags.output,
        settings: settingsFrom(flags),
        timeoutSeconds: seconds(flags.timeout),
        defaultBoot: flags.default,
        full: flags.full,
      });
      if (flags.json) {
        process.stdout.write(`${JSON.stringify({ output: report.output ?? null, ...report.menu }, null, 2)}\n`);
      } else if (toStdout) {
        process.stdout.write(report.text);
      } else {
        const marks = report.menu.entries.filter((e) => e.mark).map((e) => `${e.boot} ${e.mark}`);
        process.stdout.write(
          `wrote ${report.output}: ${report.menu.entries.map((e) => e.boot).join(', ')}` +
            `${marks.length ? ` (${marks.join('; ')})` : ''}\n`,
        );
      }
    });
}

function settingsFrom(f: GrubConfigFlags): BootSettings {
  if (!/^[A-Za-z0-9._+-]+$/.test(f.flavor)) throw new UsageError(`--flavor "${f.flavor}" is not a kernel flavor name`);
  return {
    kernel: onEsp(f.kernel ?? `/vmlinuz-${f.flavor}`),
    initrd: onEsp(f.initrd ?? `/initramfs-${f.flavor}`),
    esp: espLocator(f.espSpec),
    dataSpec: f.dataSpec,
    upper: f.upperType,
    upperSize: f.upperSize,
    ...(f.grow ? {} : { grow: false }),
    bootTries: parseBootTries(f.bootTries),
    serialSpeed: Number(f.serialSpeed),
    primaryConsole: f.primaryConsole,
  };
}

function espLocator(spec: string): EspLocator {
  const m = /^(LABEL|UUID)=(.+)$/.exec(spec);
  if (!m) throw new UsageError(`--esp-spec "${spec}" is not LABEL=... or UUID=...`);
  return { by: m[1] === 'LABEL' ? 'label' : 'uuid', value: m[2]! };
}

/** A path on the ESP as GRUB wants it: from the ESP's root. */
function onEsp(path: string): string {
  return path.startsWith('/') ? path : `/${path}`;
}

function seconds(v: string): number {
  if (!/^[0-9]{1,3}$/.test(v)) throw new UsageError(`--timeout "${v}" is not a number of seconds (0 to 999)`);
  return Number(v);
}
