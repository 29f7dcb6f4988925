import { Worker } from 'node:worker_threads';

/** Two files open for reading, to compare: an upper-layer file and its copy in a mounted image. */
export interface FilePair {
  upperFd: number;
  imageFd: number;
}

/**
 * Worker threads that compare files by their descriptors, open in this
 * process (descriptors are the process's, shared by its threads): which
 * path reaches a file is decided here (TreeReach), the reading and
 * decompressing happen there, one lane per core. Each answers a batch with
 * the offset of the first differing byte of each pair (null when equal).
 * The descriptors stay this thread's to close: Node warns of a descriptor
 * closed by a thread that did not open it.
 *
 * Plain CommonJS source: the bundled CLI has no module file a worker could load.
 */
const WORKER = `
  const { parentPort } = require('node:worker_threads');
  const { readSync } = require('node:fs');
  const CHUNK = 1 << 20;
  const a = Buffer.allocUnsafe(CHUNK);
  const b = Buffer.allocUnsafe(CHUNK);
  // Reads until the buffer is full or the file ends, so both sides stay in step.
  function readFull(fd, buf, pos) {
    let got = 0;
    while (got < buf.length) {
      const n = readSync(fd, buf, got, buf.length - got, pos + got);
      if (n === 0) break;
      got += n;
    }
    return got;
  }
  function firstDifference(fa, fb) {
    for (let pos = 0; ; ) {
      const ra = readFull(fa, a, pos);
      const rb = readFull(fb, b, pos);
      if (ra !== rb) return pos + Math.min(ra, rb);
      if (ra === 0) return null;
      if (a.compare(b, 0, rb, 0, ra) !== 0) {
        let k = 0;
        while (a[k] === b[k]) k++;
        return pos + k;
      }
      pos += ra;
    }
  }
  parentPort.on('message', ({ id, pairs }) => {
    const offsets = [];
    let error;
    for (const p of pairs) {
      try {
        offsets.push(firstDifference(p.upperFd, p.imageFd));
      } catch (e) {
        error = e.message;
        break;
      }
    }
    parentPort.postMessage({ id, offsets, error });
  });`;

interface Pending {
  resolve: (offsets: (number | null)[]) => void;
  reject: (e: Error) => void;
}

export class ContentLanes {
  private readonly workers: Worker[];
  private readonly pending = new Map<number, Pending>();
  private next = 0;

  constructor(count: number) {
    this.workers = Array.from({ length: count }, () => {
      const w = new Worker(WORKER, { eval: true });
      w.on('message', (m: { id: number; offsets: (number | null)[]; error?: string }) => {
        const p = this.pending.get(m.id)!;
        this.pending.delete(m.id);
        if (m.error !== undefined) p.reject(new Error(`reading a file to compare it failed: ${m.error}`));
        else p.resolve(m.offsets);
      });
      w.on('error', (e) => this.failAll(e));
      return w;
    });
  }

  /** Compares PAIRS in lane LANE; the caller closes their descriptors once it answers. */
  compare(lane: number, pairs: FilePair[]): Promise<(number | null)[]> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.workers[lane]!.postMessage({ id, pairs });
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }

  private failAll(e: Error): void {
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }
}
