import { Worker } from 'node:worker_threads';
import { IntegrityError } from '../lib/errors.js';
import { run } from '../lib/run.js';
import { toolHint } from '../lib/toolPackages.js';

/**
 * The POSIX CRC of PATH (a file or a device), as the `cksum` tool prints it:
 * the boot checks states with that tool (docs/state-format.md, cksum_fix),
 * and it runs on a core of its own at memory speed, where one computed here
 * takes the main thread a second per 800 MB. A misread figure would seal a
 * state no boot accepts, so the output's form and, when BYTES is given, the
 * byte count are checked.
 */
export async function cksumTool(path: string, bytes: number | undefined, what: string): Promise<number> {
  const r = await run('cksum', [path], { timeoutMs: 30 * 60_000, hint: toolHint('cksum') });
  const m = /^(\d+) (\d+)/.exec(r.stdout);
  if (!m || (bytes !== undefined && Number(m[2]) !== bytes)) {
    throw new IntegrityError(what, `cksum printed "${r.stdout.trim()}", not the CRC and the ${bytes ?? 'N'} bytes of it`);
  }
  return Number(m[1]);
}

/**
 * sha256 of a file's (or device's) first SIZE bytes, hashed in a worker
 * thread, so it runs on the other core while the main thread compares trees.
 */
export function sha256InWorker(path: string, size: number): Promise<string> {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    const { openSync, readSync, closeSync } = require('node:fs');
    const hash = require('node:crypto').createHash('sha256');
    const fd = openSync(workerData.path, 'r');
    const buf = Buffer.allocUnsafe(4 << 20);
    let pos = 0;
    while (pos < workerData.size) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, workerData.size - pos), pos);
      if (n === 0) throw new Error('it ended ' + (workerData.size - pos) + ' bytes early');
      hash.update(buf.subarray(0, n));
      pos += n;
    }
    closeSync(fd);
    parentPort.postMessage(hash.digest('hex'));`;
  return new Promise((resolve, reject) => {
    const worker = new Worker(code, { eval: true, workerData: { path, size } });
    worker.once('message', resolve);
    worker.once('error', (e) => reject(new IntegrityError(path, `reading it failed: ${e.message}`)));
  });
}

/**
 * The sha256 of a file's first SHABYTES bytes and the POSIX cksum of the
 * whole file, side by side on two cores. Both read the file at once, so
 * what one reads from the device the other finds in the page cache.
 */
export async function sumsOf(path: string, shaBytes: number): Promise<{ sha256: string; cksum: number }> {
  const [sha256, cksum] = await Promise.all([sha256InWorker(path, shaBytes), cksumTool(path, undefined, path)]);
  return { sha256, cksum };
}
