/**
 * The alpine base's cached root follows what its repositories serve. The
 * repository is made of Alpine's own packages (../shared/alpine, signed by
 * Alpine) indexed with a test key; apk is a stand-in that records each
 * bootstrap and the index it read into the root it makes, since only the
 * cache's choice is under test here (the real apk against such a
 * repository is in docs/packages-alpine.md).
 */
import { createHash, generateKeyPairSync } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { packageIdentity, readApk } from '../../src/apk/read.js';
import { writeLocalRepo, type RepoPackage } from '../../src/apk/repo.js';
import { writeApk } from '../../src/apk/write.js';
import { alpineRoot } from '../../src/image/alpine.js';
import { log } from '../../src/lib/log.js';
import { dir as dirEntry, file as fileEntry } from '../helpers/apk-harness.js';

const SHARED = resolve('../shared/alpine');
const REPO_KEY = 'cairn-test-repo.rsa.pub';
const dir = mkdtempSync(join(tmpdir(), 'cairn-root-key-'));
const calls = join(dir, 'apk-calls');
const keysDir = join(dir, 'keys');
const repo = join(dir, 'repo');
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
let alpinePackages: RepoPackage[] = [];

/** What a fake apk needs to show which index a root came from: each call, and the digest of each local index it was given. */
const FAKE_APK = `#!${process.execPath}
const { appendFileSync, mkdirSync, readFileSync, writeFileSync } = require('node:fs');
const { createHash } = require('node:crypto');
const args = process.argv.slice(2);
const root = args[args.indexOf('--root') + 1];
const repos = args.filter((_, i) => args[i - 1] === '--repository');
appendFileSync(${JSON.stringify(calls)}, root + '\\n');
mkdirSync(root + '/etc/apk', { recursive: true });
writeFileSync(root + '/etc/apk/installed-from', repos.map((r) => /^[a-z]+:/.test(r) ? r : createHash('sha256').update(readFileSync(r + '/x86_64/APKINDEX.tar.gz')).digest('hex')).join('\\n'));
`;
const apk = join(dir, 'apk');

function alpinePackage(file: string): RepoPackage {
  const bytes = readFileSync(join(SHARED, 'packages', file));
  const read = readApk(bytes, file);
  return { bytes, pkginfo: read.pkginfoText, identity: packageIdentity(read.control.compressed) };
}

/** Indexes the repository anew, as `apk index` would after a package was replaced. */
async function index(packages: readonly RepoPackage[]): Promise<string> {
  const written = await writeLocalRepo({ dir: repo, arch: 'x86_64', packages, signingKey: privateKey, keyName: REPO_KEY });
  return createHash('sha256').update(readFileSync(written.indexPath)).digest('hex');
}

function apkCalls(): number {
  return existsSync(calls) ? readFileSync(calls, 'utf8').split('\n').filter(Boolean).length : 0;
}

const build = (repositories: string[], cacheDir: string, target: string) =>
  alpineRoot({ repositories, apk, keysDir, kernelPackage: 'linux-virt', luks: false, cacheDir }, join(dir, target));

const installedFrom = (target: string) => readFileSync(join(dir, target, 'etc/apk/installed-from'), 'utf8');

beforeAll(() => {
  if (!existsSync(join(SHARED, 'packages'))) throw new Error(`${SHARED}/packages is missing: these tests use Alpine's real packages (see its README)`);
  writeFileSync(apk, FAKE_APK);
  chmodSync(apk, 0o755);
  mkdirSync(keysDir);
  for (const k of readdirSync(join(SHARED, 'keys'))) copyFileSync(join(SHARED, 'keys', k), join(keysDir, k));
  alpinePackages = readdirSync(join(SHARED, 'packages')).filter((f) => f.endsWith('.apk')).map(alpinePackage);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Alpine's alpine-release rebuilt under the same name and version with other contents, as a user's local rebuild would be. */
function rebuiltRelease(): RepoPackage {
  const original = alpinePackages.find((p) => /^pkgname = alpine-release$/m.test(p.pkginfo))!;
  const written = writeApk({
    pkginfo: original.pkginfo,
    data: [dirEntry('etc'), fileEntry('etc/alpine-release', '3.19.1 rebuilt\n')],
    signingKey: privateKey,
    keyName: REPO_KEY,
  });
  return { bytes: written.bytes, pkginfo: written.pkginfo, identity: written.identity };
}

describe('the alpine root cache', () => {
  it('reuses the root while the repository serves the same index, and bootstraps again after a package in it changed', async () => {
    const cache = join(dir, 'cache-local');
    const before = apkCalls();
    const first = await index(alpinePackages);
    await build([repo], cache, 'a');
    await build([repo], cache, 'b');
    expect(apkCalls() - before).toBe(1);
    expect(installedFrom('b')).toBe(first);

    // alpine-release replaced by a rebuild of the same name and version: only the index's identity (C:) tells them apart.
    const changed = alpinePackages.map((p) => (/^pkgname = alpine-release$/m.test(p.pkginfo) ? rebuiltRelease() : p));
    const second = await index(changed);
    expect(second).not.toBe(first);
    await build([repo], cache, 'c');
    expect(apkCalls() - before).toBe(2);
    expect(installedFrom('c')).toBe(second);

    await build([repo], cache, 'd');
    expect(apkCalls() - before).toBe(2);
    expect(installedFrom('d')).toBe(second);
  });

  it('bootstraps again when a trusted key is replaced under the same name', async () => {
    const cache = join(dir, 'cache-keys');
    await index(alpinePackages);
    await build([repo], cache, 'k1');
    const before = apkCalls();
    const name = readdirSync(keysDir).find((k) => k.startsWith('alpine-devel@'))!;
    const original = readFileSync(join(keysDir, name));
    try {
      writeFileSync(join(keysDir, name), generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }));
      await build([repo], cache, 'k2');
      expect(apkCalls() - before).toBe(1);
    } finally {
      writeFileSync(join(keysDir, name), original);
    }
    await build([repo], cache, 'k3');
    expect(apkCalls() - before).toBe(1);
  });

  describe('a repository served over HTTP', () => {
    let server: Server;
    let url: string;
    let failing = false;
    beforeAll(async () => {
      server = createServer((req, res) => {
        const path = join(repo, decodeURIComponent(new URL(req.url!, 'http://x').pathname).replace(/^\/repo\//, ''));
        if (failing || !existsSync(path)) {
          res.writeHead(failing ? 503 : 404).end();
          return;
        }
        res.writeHead(200).end(readFileSync(path));
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/repo`;
    });
    afterAll(() => new Promise<void>((r) => server.close(() => r())));

    it('follows the index the server serves; an index that cannot be read gives a root made for that build alone, with a warning', async () => {
      const cache = join(dir, 'cache-http');
      const roots = () => readdirSync(join(cache, 'roots')).filter((f) => !f.endsWith('.lock')).sort();
      await index(alpinePackages);
      const before = apkCalls();
      await build([url], cache, 'h1');
      await build([url], cache, 'h2');
      expect(apkCalls() - before).toBe(1);

      await index(alpinePackages.filter((p) => !/^pkgname = zlib$/m.test(p.pkginfo)));
      await build([url], cache, 'h3');
      expect(apkCalls() - before).toBe(2);
      const kept = roots();
      expect(kept).toHaveLength(2);

      failing = true;
      const warn = vi.spyOn(log, 'warn').mockImplementation(() => undefined);
      try {
        await build([url], cache, 'h4');
        await build([url], cache, 'h5');
        expect(apkCalls() - before).toBe(4);
        expect(installedFrom('h5')).toBe(url);
        const said = warn.mock.calls.map((c) => [JSON.stringify(c[0]), String(c[1])]);
        expect(said).toHaveLength(2);
        expect(said[0]![1]).toMatch(/index could not be read.*bootstrapping the root \(alpine-x86_64\) afresh/);
        expect(said[0]![0]).toContain(`${url}/x86_64/APKINDEX.tar.gz: HTTP 503`);
      } finally {
        warn.mockRestore();
        failing = false;
      }
      // Nothing was kept of those two, and the server's index, readable again, finds its root.
      expect(roots()).toEqual(kept);
      await build([url], cache, 'h6');
      expect(apkCalls() - before).toBe(4);
    });
  });
});
