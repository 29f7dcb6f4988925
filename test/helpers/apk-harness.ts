/**
 * Fixtures for the apk wrapper's tests: a STAND-IN FOR apk (apk-standin.ts,
 * bundled here), the cairn CLI bundled to a temp file (so the unit tests
 * need no `npm run build`), an Alpine-like root with an upstream signing
 * key, and small packages built with src/apk/write.ts the way abuild builds
 * a kernel, firmware, GRUB and mkinitfs.
 */
import { build } from 'esbuild';
import { execa } from 'execa';
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { LOCAL_KEY } from '../../src/apk/localKey.js';
import type { TarEntry } from '../../src/apk/tar.js';
import { writeApk, type ControlFile } from '../../src/apk/write.js';
import type { StandinScenario } from './apk-standin.js';

export const UPSTREAM_KEY_NAME = 'alpine-devel@alpinelinux.org-6165ee59.rsa.pub';
export const ARCH = 'x86_64';
export const KREL = '6.6.1-0-lts';

const rawText = {
  name: 'raw-text',
  setup(b: import('esbuild').PluginBuild) {
    b.onResolve({ filter: /\?raw$/ }, (args) => ({ path: resolve(args.resolveDir, args.path.slice(0, -4)), namespace: 'raw-text' }));
    b.onLoad({ filter: /.*/, namespace: 'raw-text' }, (args) => ({ contents: readFileSync(args.path, 'utf8'), loader: 'text' }));
  },
};

const BANNER = "#!/usr/bin/env node\nimport { createRequire as __r } from 'node:module';\nconst require = __r(import.meta.url);";

async function bundle(entry: string, out: string): Promise<string> {
  await build({ entryPoints: [entry], outfile: out, bundle: true, platform: 'node', format: 'esm', target: 'node18.19', banner: { js: BANNER }, plugins: [rawText], logLevel: 'silent' });
  chmodSync(out, 0o755);
  return out;
}

function keyPair(): { privateKey: KeyObject; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { privateKey, publicPem: publicKey.export({ type: 'spki', format: 'pem' }) as string };
}

export interface Harness {
  dir: string;
  /** The stand-in's path: the wrapper's "real apk". */
  apk: string;
  cli: string;
  root: string;
  data: string;
  keysDir: string;
  upstream: string;
  log: string;
  scenarioPath: string;
  upstreamKey: KeyObject;
  localKey: KeyObject;
  scenario(s: Partial<StandinScenario>): void;
  /** Every argv the stand-in was run with. */
  calls(): string[][];
  env(extra?: Record<string, string>): Record<string, string>;
  cairn(args: string[], options?: { env?: Record<string, string>; input?: string }): Promise<{ exitCode: number; stdout: string; stderr: string; signal?: string }>;
  cleanup(): void;
}

let standinBundle: Promise<string> | undefined;
let cliBundle: Promise<string> | undefined;
const bundleDir = mkdtempSync(join(tmpdir(), 'cairn-apk-bundles-'));
process.once('exit', () => rmSync(bundleDir, { recursive: true, force: true }));

export interface HarnessOptions {
  /** The cairn CLI to run (system tests: the built dist/cairn.mjs); default: src/main.ts bundled here. */
  cli?: string;
  /** The "upstream" signing key (private), so harnesses can share packages built once; default: a new one. */
  upstreamKey?: KeyObject;
}

/** The stand-in for apk, bundled into an executable node script. */
export function standinApk(): Promise<string> {
  return (standinBundle ??= bundle('test/helpers/apk-standin.ts', join(bundleDir, 'apk')));
}

export async function harness(options: HarnessOptions = {}): Promise<Harness> {
  const apk = await standinApk();
  const cli = options.cli ?? (await (cliBundle ??= bundle('src/main.ts', join(bundleDir, 'cairn.mjs'))));
  const dir = mkdtempSync(join(tmpdir(), 'cairn-apk-test-'));
  const root = join(dir, 'root');
  const data = join(dir, 'data');
  const keysDir = join(root, 'etc/apk/keys');
  const upstream = join(dir, 'upstream');
  for (const d of [keysDir, upstream, data, join(root, 'lib/apk/db')]) mkdirSync(d, { recursive: true });
  writeFileSync(join(root, 'etc/apk/arch'), `${ARCH}\n`);
  writeFileSync(join(root, 'etc/apk/world'), 'alpine-base\n');
  const up = options.upstreamKey
    ? { privateKey: options.upstreamKey, publicPem: createPublicKey(options.upstreamKey).export({ type: 'spki', format: 'pem' }) as string }
    : keyPair();
  writeFileSync(join(keysDir, UPSTREAM_KEY_NAME), up.publicPem);
  // The local key as the image builder leaves it (2048 bits: tests make many).
  const local = keyPair();
  mkdirSync(join(data, LOCAL_KEY.dir), { recursive: true, mode: 0o700 });
  writeFileSync(join(data, LOCAL_KEY.dir, LOCAL_KEY.privateName), local.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  writeFileSync(join(keysDir, LOCAL_KEY.publicName), local.publicPem);

  const log = join(dir, 'apk-calls.jsonl');
  const scenarioPath = join(dir, 'scenario.json');
  const h: Harness = {
    dir,
    apk,
    cli,
    root,
    data,
    keysDir,
    upstream,
    log,
    scenarioPath,
    upstreamKey: up.privateKey,
    localKey: local.privateKey,
    scenario(s) {
      writeFileSync(scenarioPath, JSON.stringify({ arch: ARCH, upstream, upstreamUrl: 'https://dl-cdn.alpinelinux.org/alpine/v3.19/main', changes: {}, ...s }));
    },
    calls() {
      try {
        return readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as string[]);
      } catch {
        return [];
      }
    },
    env(extra = {}) {
      return { CAIRN_REAL_APK: apk, STANDIN_LOG: log, STANDIN_SCENARIO: scenarioPath, ...extra };
    },
    async cairn(args, options = {}) {
      const r = await execa(process.execPath, [cli, ...args], {
        reject: false,
        env: h.env(options.env),
        ...(options.input !== undefined ? { input: options.input } : { stdin: 'ignore' as const }),
      });
      return { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr, signal: r.signal ?? undefined };
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
  h.scenario({});
  return h;
}

/** An upstream package as abuild would make it, signed with the upstream key, written to the upstream directory. */
export function upstreamPackage(h: Harness, p: { name: string; version: string; data: TarEntry[]; scripts?: ControlFile[]; extra?: string[]; arch?: string }): Buffer {
  const size = p.data.reduce((n, e) => n + (e.type === 'file' ? (e.content?.length ?? 0) : 0), 0);
  const pkginfo = [
    '# Generated by abuild 3.12.0-r0',
    '# using fakeroot version 1.32.1',
    `# ${new Date(1_700_000_000_000).toUTCString()}`,
    `pkgname = ${p.name}`,
    `pkgver = ${p.version}`,
    `pkgdesc = ${p.name} for tests`,
    'url = https://example.org/',
    'builddate = 1700000000',
    'packager = Buildozer <alpine-devel@lists.alpinelinux.org>',
    `size = ${size}`,
    `arch = ${p.arch ?? ARCH}`,
    `origin = ${p.name}`,
    'commit = 0123456789abcdef0123456789abcdef01234567',
    'maintainer = Test <test@example.org>',
    'license = GPL-2.0-only',
    ...(p.extra ?? []),
    '',
  ].join('\n');
  const written = writeApk({ pkginfo, scripts: p.scripts, data: p.data, signingKey: h.upstreamKey, keyName: UPSTREAM_KEY_NAME });
  writeFileSync(join(h.upstream, `${p.name}-${p.version}.apk`), written.bytes);
  return written.bytes;
}

const T = 1_700_000_000;
export function dir(name: string, mode = 0o755): TarEntry {
  return { name, type: 'directory', mode, uid: 0, gid: 0, uname: 'root', gname: 'root', mtime: T };
}
export function file(name: string, content: string | Buffer, mode = 0o644): TarEntry {
  return { name, type: 'file', mode, uid: 0, gid: 0, uname: 'root', gname: 'root', mtime: T, content: Buffer.from(content) };
}
export function symlink(name: string, target: string): TarEntry {
  return { name, type: 'symlink', mode: 0o777, uid: 0, gid: 0, uname: 'root', gname: 'root', mtime: T, linkTarget: target };
}

/** A directory tree as package entries under `prefix` (itself included), owned by root, in any order (writeApk sorts). */
export function treeEntries(root: string, prefix: string): TarEntry[] {
  const out: TarEntry[] = [dir(prefix)];
  const walk = (abs: string) => {
    for (const name of readdirSync(abs)) {
      const path = join(abs, name);
      const rel = `${prefix}/${relative(root, path)}`;
      const st = lstatSync(path);
      if (st.isDirectory()) {
        out.push(dir(rel, st.mode & 0o7777));
        walk(path);
      } else if (st.isSymbolicLink()) {
        out.push(symlink(rel, readlinkSync(path)));
      } else {
        out.push(file(rel, readFileSync(path), st.mode & 0o7777));
      }
    }
  };
  walk(root);
  return out;
}

/** linux-lts as aports builds it, small: an image in boot/, modules, kernel.release for mkinitfs's trigger, a post-install and a trigger. */
export function kernelPackage(h: Harness, version = '6.6.1-r0', release = KREL): Buffer {
  const m = `lib/modules/${release}`;
  return upstreamPackage(h, {
    name: 'linux-lts',
    version,
    data: [
      dir('boot'),
      file('boot/vmlinuz-lts', Buffer.alloc(4096, 0x4b)),
      file('boot/config-lts', 'CONFIG_SQUASHFS=y\n'),
      file('boot/System.map-lts', 'ffffffff81000000 T _text\n'),
      dir('lib'),
      dir('lib/modules'),
      dir(m),
      dir(`${m}/kernel`),
      dir(`${m}/kernel/fs`),
      dir(`${m}/kernel/fs/squashfs`),
      file(`${m}/kernel/fs/squashfs/squashfs.ko.gz`, Buffer.alloc(2048, 0x11)),
      file(`${m}/modules.dep`, 'kernel/fs/squashfs/squashfs.ko.gz:\n'),
      file(`${m}/modules.order`, 'kernel/fs/squashfs/squashfs.ko\n'),
      symlink(`${m}/source`, '/usr/src/linux-headers'),
      dir('usr'),
      dir('usr/share'),
      dir('usr/share/kernel'),
      dir('usr/share/kernel/lts'),
      file('usr/share/kernel/lts/kernel.release', `${release}\n`),
    ],
    scripts: [
      { name: '.post-install', content: `#!/bin/sh\ndepmod ${release}\n` },
      { name: '.trigger', content: '#!/bin/sh\nfor d; do depmod "${d##*/}"; done\n' },
    ],
    extra: ['depend = mkinitfs', 'triggers = /lib/modules/*'],
  });
}

export function firmwarePackage(h: Harness, version = '20231111-r1'): Buffer {
  return upstreamPackage(h, {
    name: 'linux-firmware-intel',
    version,
    arch: 'noarch',
    data: [
      dir('lib'),
      dir('lib/firmware'),
      dir('lib/firmware/intel'),
      file('lib/firmware/intel/ibt-20-1-3.sfi', Buffer.alloc(3000, 0x22)),
      symlink('lib/firmware/intel/ibt-current.sfi', 'ibt-20-1-3.sfi'),
      dir('usr'),
      dir('usr/share'),
      dir('usr/share/licenses'),
      file('usr/share/licenses/LICENCE.intel', 'licence text\n'),
    ],
  });
}

export function mkinitfsPackage(h: Harness, version = '3.9.0-r1'): Buffer {
  return upstreamPackage(h, {
    name: 'mkinitfs',
    version,
    data: [dir('sbin'), file('sbin/mkinitfs', '#!/bin/sh\necho mkinitfs\n', 0o755)],
    scripts: [
      { name: '.post-install', content: '#!/bin/sh\ntrue\n' },
      { name: '.trigger', content: '#!/bin/sh\nmkinitfs -o /boot/initramfs-lts "$(cat "$1"/kernel.release)"\n' },
    ],
    extra: ['triggers = /usr/share/kernel/*'],
  });
}

export function grubPackage(h: Harness, version = '2.12-r1'): Buffer {
  return upstreamPackage(h, {
    name: 'grub',
    version,
    data: [dir('usr'), dir('usr/sbin'), file('usr/sbin/update-grub', '#!/bin/sh\ngrub-mkconfig -o /boot/grub/grub.cfg\n', 0o755)],
    scripts: [
      { name: '.post-upgrade', content: '#!/bin/sh\nif [ -e /etc/grub-autoinstall ]; then . /etc/grub-autoinstall; fi\n' },
      { name: '.pre-install', content: '#!/bin/sh\ntrue\n' },
      { name: '.trigger', content: '#!/bin/sh\nexec /usr/sbin/update-grub\n' },
    ],
    extra: ['triggers = /boot'],
  });
}

export function ordinaryPackage(h: Harness, name = 'htop', version = '3.2.2-r1'): Buffer {
  return upstreamPackage(h, { name, version, data: [dir('usr'), dir('usr/bin'), file(`usr/bin/${name}`, 'ELF\n', 0o755)] });
}
