import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeLocalRepo } from '../../src/apk/repo.js';
import { bootstrapArgs, checkAlpineSources, defaultAlpineRepositories, imageRepositories } from '../../src/image/alpine.js';
import { BASES, kernelFlavor } from '../../src/image/base.js';

const dir = mkdtempSync(join(tmpdir(), 'cairn-alpine-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('alpine bootstrap', () => {
  it('asks apk for a new database, only the given repositories, the root\'s keys and the cache', () => {
    const args = bootstrapArgs({ root: '/r', keysDir: '/r/etc/apk/keys', cacheDir: '/c/apk', repositories: ['https://m/main', '/local'], packages: ['alpine-base', 'linux-lts'] });
    expect(args.slice(0, 1)).toEqual(['add']);
    expect(args).toEqual(expect.arrayContaining(['--initdb', '--no-interactive']));
    const value = (flag: string) => args[args.indexOf(flag) + 1];
    expect([value('--root'), value('--arch'), value('--keys-dir'), value('--repositories-file'), value('--cache-dir')]).toEqual(['/r', 'x86_64', '/r/etc/apk/keys', '/dev/null', '/c/apk']);
    expect(args.filter((_, i) => args[i - 1] === '--repository')).toEqual(['https://m/main', '/local']);
    expect(args.slice(args.indexOf('--') + 1)).toEqual(['alpine-base', 'linux-lts']);
  });

  it('gives the image the network repositories it was built from, else the release\'s on the CDN', () => {
    expect(imageRepositories(['/srv/repo', 'https://mirror.example/alpine/v3.20/main'], 'v3.20')).toEqual(['https://mirror.example/alpine/v3.20/main']);
    expect(imageRepositories(['/srv/repo'], 'v3.19')).toEqual(defaultAlpineRepositories('v3.19'));
    expect(defaultAlpineRepositories('v3.20')).toEqual(['https://dl-cdn.alpinelinux.org/alpine/v3.20/main', 'https://dl-cdn.alpinelinux.org/alpine/v3.20/community']);
  });

  it('names kernel flavors and paths per base', () => {
    expect(kernelFlavor('6.6.58-0-lts')).toBe('lts');
    expect(kernelFlavor('6.1.0-27-cloud-amd64')).toBe('cloud-amd64');
    expect(BASES.alpine.kernelImage('6.6.58-0-lts', 'lts')).toBe('boot/vmlinuz-lts');
    expect(BASES.debian.kernelImage('6.1.0-27-amd64', 'amd64')).toBe('boot/vmlinuz-6.1.0-27-amd64');
    expect([BASES.alpine.modulesDir, BASES.alpine.firmwareDir]).toEqual(['lib/modules', 'lib/firmware']);
    expect([BASES.debian.modulesDir, BASES.debian.firmwareDir]).toEqual(['usr/lib/modules', 'usr/lib/firmware']);
  });
});

describe('alpine sources are checked before a build writes anything', () => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keys = join(dir, 'keys');
  const repo = join(dir, 'repo');
  mkdirSync(keys, { recursive: true });
  writeFileSync(join(keys, 'repo.rsa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));

  it('accepts a local repository whose index a trusted key signed', async () => {
    await writeLocalRepo({ dir: repo, arch: 'x86_64', packages: [], signingKey: privateKey, keyName: 'repo.rsa.pub' });
    await expect(checkAlpineSources({ repositories: [repo], keysDir: keys })).resolves.toBeUndefined();
  });

  it('refuses an index signed by another key under a trusted key\'s name', async () => {
    const other = join(dir, 'other');
    await writeLocalRepo({ dir: other, arch: 'x86_64', packages: [], signingKey: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey, keyName: 'repo.rsa.pub' });
    await expect(checkAlpineSources({ repositories: [other], keysDir: keys })).rejects.toThrow(/is not signed by a key in/);
  });

  it('refuses a directory without an index for x86_64, and an empty keys directory', async () => {
    await expect(checkAlpineSources({ repositories: [join(dir, 'nothing')], keysDir: keys })).rejects.toThrow(/x86_64\/APKINDEX.tar.gz is missing/);
    mkdirSync(join(dir, 'no-keys'), { recursive: true });
    await expect(checkAlpineSources({ repositories: [repo], keysDir: join(dir, 'no-keys') })).rejects.toThrow(/no trusted Alpine keys/);
  });

  it('refuses a repository URL nothing answers at', async () => {
    await expect(checkAlpineSources({ repositories: ['http://127.0.0.1:9/alpine/v3.20/main'], keysDir: keys })).rejects.toThrow(/is not reachable/);
  });
});
