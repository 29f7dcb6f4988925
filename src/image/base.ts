import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RUNTIME } from '../names.js';
import { configureAlpinePackaging } from './alpinePackaging.js';
import { configureDebianPackaging } from './debianPackaging.js';

export type BaseName = 'debian' | 'alpine';

/** An OpenRC service and the runlevel it is enabled in. */
export interface Service {
  name: string;
  runlevel: string;
}

export interface PackagingOptions {
  /** The data partition's staging directory (what only root may read goes there). */
  dataDir: string;
  /** apk: the repositories the image's own apk uses (/etc/apk/repositories). */
  repositories: string[];
}

/**
 * What differs between the bases once their root is bootstrapped: where a
 * kernel package puts its files, the base's init and login details, and the
 * package manager's hooks. Everything else about an image is the same code.
 */
export interface Base {
  name: BaseName;
  /** Where kernel packages put the modules, relative to the root. */
  modulesDir: string;
  firmwareDir: string;
  /** The flavor of an installed kernel release (Debian's cloud-amd64, Alpine's lts). */
  flavor: (root: string, kernelVersion: string) => Promise<string>;
  /** The kernel image the kernel package installed, relative to the root. */
  kernelImage: (kernelVersion: string, flavor: string) => string;
  /** Downloaded packages that stay out of rootfs.squashfs (mksquashfs -wildcards patterns). */
  packageCache: string[];
  /** A login on the first serial port, as the base's inittab writes it. */
  serialGetty: string;
  loginShell: string;
  /**
   * The runlevel the shutdown save runs in, and conf.d lines placing it and
   * the step that leaves the data partition read-only (readOnlyOrder) in the
   * base's shutdown.
   */
  save: { runlevel: string; order: string; readOnlyOrder: string };
  /** The base's own services a booting system needs; enabled when the root has them. */
  systemServices: Service[];
  /** Lines added to the base's own /etc/conf.d files. */
  confd: Record<string, string>;
  /** /etc/network/interfaces, and the programs it names, when the base's ifupdown brings the network up by itself. */
  network?: { interfaces: string; files: Record<string, string> };
  configurePackaging: (root: string, o: PackagingOptions) => Promise<void>;
}

/** debian-style `6.1.0-27-cloud-amd64` and Alpine's `6.6.58-0-lts`: what follows the version and ABI number. */
export function kernelFlavor(kernelVersion: string): string {
  return kernelVersion.replace(/^[0-9.]+-[0-9]+-/, '');
}

/** ifupdown's mapping script of the debian base. */
const WIRED_MAPPING = '/usr/lib/cairn/ifupdown-wired';

export const BASES: Record<BaseName, Base> = {
  debian: {
    name: 'debian',
    // Debian's /lib is a link to usr/lib.
    modulesDir: 'usr/lib/modules',
    firmwareDir: 'usr/lib/firmware',
    flavor: async (_root, v) => kernelFlavor(v),
    kernelImage: (v) => `boot/vmlinuz-${v}`,
    packageCache: ['var/cache/apt/archives/*.deb'],
    serialGetty: 'T0:2345:respawn:/sbin/getty -L 115200 ttyS0 vt100',
    loginShell: '/bin/bash',
    save: {
      // Debian's runlevels 0 and 6 go through "off", where processes are
      // killed and file systems unmounted (openrc/cairn-save.initd).
      runlevel: 'off',
      order: '# Debian\'s OpenRC shuts down through the "off" runlevel.\nsave_after=\nsave_before=umountfs\n',
      // umountfs passes over the data partition (mounted before the root).
      // The "off" runlevel only starts services; the processes are killed,
      // swap turned off and file systems unmounted when OpenRC then stops
      // them all: started before umountfs, the step is stopped after it.
      readOnlyOrder: '# Debian: when stopped, after umountfs (processes killed, swap off).\nreadonly_at=stop\nreadonly_after=\nreadonly_before=umountfs\n',
    },
    // Debian's openrc package enables its own services when it installs.
    systemServices: [],
    confd: {},
    // A stick moves between machines, so every wired interface is taken by
    // DHCP whatever the kernel names it: Debian's ifupdown takes patterns in
    // allow- lines, and a mapping (glob patterns, a script that names the
    // logical interface) gives each the one stanza "wired". allow-hotplug:
    // brought up when the card appears.
    network: {
      interfaces: [
        '# cairn: every wired interface by DHCP, whatever its name (see interfaces(5)).',
        'auto lo',
        'iface lo inet loopback',
        '',
        'allow-hotplug /en* /eth*',
        'mapping en* eth*',
        `  script ${WIRED_MAPPING}`,
        '',
        'iface wired inet dhcp',
        '',
      ].join('\n'),
      files: { [WIRED_MAPPING]: '#!/bin/sh\n# cairn: every wired interface is the logical interface "wired" (/etc/network/interfaces).\necho wired\n' },
    },
    configurePackaging: configureDebianPackaging,
  },
  alpine: {
    name: 'alpine',
    modulesDir: 'lib/modules',
    firmwareDir: 'lib/firmware',
    flavor: alpineFlavor,
    kernelImage: (_v, flavor) => `boot/vmlinuz-${flavor}`,
    packageCache: ['var/cache/apk/*', 'etc/apk/cache/*'],
    serialGetty: 'ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100',
    loginShell: '/bin/sh',
    save: {
      runlevel: 'shutdown',
      order: '# Alpine\'s shutdown runlevel: killprocs, then the save, then mount-ro.\nsave_after=killprocs\nsave_before=mount-ro\n',
      readOnlyOrder: '# Alpine: after the save, before mount-ro.\nreadonly_after="killprocs cairn-save"\nreadonly_before=mount-ro\n',
    },
    // What Alpine's own images enable (aports scripts/genapkovl-*.sh), less
    // modloop (cairn's initramfs mounts the modules image) and savecache
    // (lbu's, not cairn's).
    systemServices: [
      ...['devfs', 'dmesg', 'mdev', 'hwdrivers'].map((name) => ({ name, runlevel: 'sysinit' })),
      ...['modules', 'sysctl', 'hostname', 'bootmisc', 'syslog', 'hwclock'].map((name) => ({ name, runlevel: 'boot' })),
      ...['killprocs', 'mount-ro'].map((name) => ({ name, runlevel: 'shutdown' })),
    ],
    confd: {
      // bootmisc needs localmount, and localmount's stop, which runs before
      // the shutdown runlevel starts, unmounts what fstab does not list:
      // the data partition would be gone before the save.
      localmount: `\n# cairn: the data partition and cairn's layers stay mounted until mount-ro, after the save.\nno_umounts="${RUNTIME.dataDir}:${RUNTIME.runDir}:${RUNTIME.runDir}/.*"\n`,
    },
    configurePackaging: configureAlpinePackaging,
  },
};

/**
 * The flavor of an Alpine kernel release: the one whose
 * usr/share/kernel/<flavor>/kernel.release names it (what mkinitfs's
 * trigger reads), else the release's own suffix (6.6.58-0-lts: lts).
 */
async function alpineFlavor(root: string, kernelVersion: string): Promise<string> {
  const dir = join(root, 'usr/share/kernel');
  for (const flavor of existsSync(dir) ? await readdir(dir) : []) {
    const release = await readFile(join(dir, flavor, 'kernel.release'), 'utf8').catch(() => '');
    if (release.trim() === kernelVersion) return flavor;
  }
  return kernelFlavor(kernelVersion);
}

/** The kernel versions installed in a root (<modulesDir>/<kver>). */
export async function kernelVersions(root: string, base: Base): Promise<string[]> {
  const dir = join(root, base.modulesDir);
  return existsSync(dir) ? (await readdir(dir)).sort() : [];
}
