import { createPrivateKey, createPublicKey, generateKeyPair, type KeyObject } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { CairnError } from '../lib/errors.js';
import { fsyncDir, writeFileDurably } from '../lib/durable.js';
import { log } from '../lib/log.js';

/**
 * The local signing key. Repacked special packages lose their upstream
 * signature; they are signed with this key instead, and apk checks them
 * against its public half like any other package (DESIGN.md: never install
 * with signature checks off).
 *
 * - The private key lives on the data partition, never in the RAM layer or
 *   the base image: `<data>/.cairn/apk/cairn-local.rsa`, mode 0600 in a 0700
 *   directory, owned by root. A saved state never carries it.
 * - The public key is `/etc/apk/keys/cairn-local.rsa.pub`; the image builder
 *   puts it in the base image, and a missing one is written again here.
 */

export const LOCAL_KEY = {
  /** Relative to the data partition. */
  dir: '.cairn/apk',
  privateName: 'cairn-local.rsa',
  /** The file name in /etc/apk/keys, and so the name in `.SIGN.RSA256.<name>`. */
  publicName: 'cairn-local.rsa.pub',
  bits: 4096,
} as const;

export interface LocalKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** The public key's file name in the keys directory. */
  keyName: string;
  privatePath: string;
  publicPath: string;
  /** Which halves this call wrote. */
  created: { privateKey: boolean; publicKey: boolean };
}

export class LocalKeyMismatchError extends CairnError {
  override readonly code = 'APK_LOCAL_KEY_MISMATCH';
  constructor(readonly privatePath: string, readonly publicPath: string) {
    super(`${publicPath} is not the public half of ${privatePath}: packages cairn signs would be refused`, {
      hint: `remove ${publicPath} so cairn writes the right one, or restore the private key that belongs to it`,
    });
  }
}

export interface EnsureKeyOptions {
  /** RSA modulus size for a new key (abuild-keygen's default is 4096). */
  bits?: number;
}

/** Loads the local key pair, creating what is missing, each file written durably. */
export async function ensureLocalKey(dataDir: string, keysDir: string, options: EnsureKeyOptions = {}): Promise<LocalKey> {
  const privatePath = join(dataDir, LOCAL_KEY.dir, LOCAL_KEY.privateName);
  const publicPath = join(keysDir, LOCAL_KEY.publicName);
  const created = { privateKey: false, publicKey: false };

  let privateKey: KeyObject;
  if (existsSync(privatePath)) {
    privateKey = createPrivateKey(await readFile(privatePath));
    await chmod(privatePath, 0o600);
  } else {
    if (existsSync(publicPath)) {
      log.warn({ publicPath }, 'the local private key is missing: making a new pair (packages signed by the old key can no longer be reinstalled from their repacks)');
    }
    privateKey = await newKey(options.bits ?? LOCAL_KEY.bits);
    await mkdirDurably(dirname(privatePath), 0o700);
    await writeFileDurably(privatePath, privateKey.export({ type: 'pkcs8', format: 'pem' }), 0o600);
    created.privateKey = true;
  }
  const publicKey = createPublicKey(privateKey);
  const publicPem = publicKey.export({ type: 'spki', format: 'pem' }) as string;

  if (existsSync(publicPath) && !created.privateKey) {
    const existing = await readFile(publicPath, 'utf8');
    let same = false;
    try {
      same = createPublicKey(existing).export({ type: 'spki', format: 'pem' }) === publicPem;
    } catch {
      same = false;
    }
    if (!same) throw new LocalKeyMismatchError(privatePath, publicPath);
  } else {
    await mkdirDurably(keysDir, 0o755);
    await writeFileDurably(publicPath, publicPem, 0o644);
    created.publicKey = true;
  }
  return { privateKey, publicKey, keyName: LOCAL_KEY.publicName, privatePath, publicPath, created };
}

async function newKey(bits: number): Promise<KeyObject> {
  const { privateKey } = await promisify(generateKeyPair)('rsa', { modulusLength: bits, publicExponent: 0x10001 });
  return privateKey;
}

/** mkdir -p, each new directory's entry fsynced in its parent. */
async function mkdirDurably(dir: string, mode: number): Promise<void> {
  if (existsSync(dir)) return;
  await mkdirDurably(dirname(dir), 0o755);
  await mkdir(dir, { mode });
  await chmod(dir, mode);
  await fsyncDir(dirname(dir));
}
