import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PathError } from '../lib/errors.js';
import { log } from '../lib/log.js';
import { inChroot, withChroot } from './chroot.js';

/** The runtime's files in an image: the command (src/entry.mjs) and the code it runs. */
export const RUNTIME_DIR = 'usr/lib/cairn';
const ENTRY = 'cairn.mjs';
const CODE = 'cairn.cjs';

/**
 * The bundled runtime: the command and its code, beside the running code
 * when it is the bundle, else in dist/ of the checkout.
 */
export function runtimeFiles(): { entry: string; code: string } {
  const self = fileURLToPath(import.meta.url);
  if (self.endsWith(CODE)) return { entry: join(dirname(self), ENTRY), code: self };
  let dir = dirname(self);
  for (let i = 0; i < 5; i++, dir = dirname(dir)) {
    const dist = join(dir, 'dist');
    if (existsSync(join(dist, ENTRY)) && existsSync(join(dist, CODE))) return { entry: join(dist, ENTRY), code: join(dist, CODE) };
  }
  throw new PathError(`dist/${ENTRY}`, 'the bundled runtime was not found', 'run npm run build first');
}

/**
 * Puts the runtime into ROOT with /usr/bin/cairn to run it, and V8's code
 * cache for it made by the root's own Node.js (src/entry.mjs says why): a
 * cache only the Node.js that runs it can make. Without one (a root whose
 * node does not run here) the image works as well, each command compiling
 * the runtime as it starts; the build says so.
 */
export async function installRuntime(root: string): Promise<void> {
  const { entry, code } = runtimeFiles();
  const dir = join(root, RUNTIME_DIR);
  await mkdir(dir, { recursive: true });
  await copyFile(entry, join(dir, ENTRY));
  await copyFile(code, join(dir, CODE));
  await mkdir(join(root, 'usr/bin'), { recursive: true });
  await writeFile(join(root, 'usr/bin/cairn'), `#!/bin/sh\nexec node /${RUNTIME_DIR}/${ENTRY} "$@"\n`, { mode: 0o755 });
  await chmod(join(root, 'usr/bin/cairn'), 0o755);
  // A command that loads most of the runtime: its functions are in the cache too.
  const made = await withChroot(root, [], () =>
    inChroot(root, ['node', `/${RUNTIME_DIR}/${ENTRY}`, 'help', 'save'], {
      // V8 refuses a cache made under other flags: none from the build machine's environment.
      env: { CAIRN_CODE_CACHE: 'make', NODE_OPTIONS: '' },
      timeoutMs: 300_000,
      okExitCodes: [1, 126, 127],
    }),
  ).catch((e: Error) => ({ exitCode: -1, stderr: e.message }));
  if (made.exitCode !== 0 || !existsSync(join(dir, `${CODE}.cache`))) {
    log.warn({ stderr: made.stderr.slice(-400) }, 'the root\'s Node.js made no code cache for cairn: each cairn command compiles the runtime as it starts');
  }
}
