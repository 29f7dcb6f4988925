import { describe, expect, it } from 'vitest';
import { run } from '../../src/lib/run.js';

/** run()'s onStdoutLine: what getfattr's dumps and mksquashfs's progress go through. */
describe('run with a line callback', () => {
  const lines = async (script: string, lineEncoding?: 'utf8' | 'latin1') => {
    const got: string[] = [];
    const r = await run('sh', ['-c', script], { timeoutMs: 30_000, onStdoutLine: (l) => got.push(l), lineEncoding });
    return { got, stdout: r.stdout };
  };

  it('gives whole lines, \\r ending one too, and the last line without a newline', async () => {
    const { got } = await lines(`printf 'a\\nb\\r[==] 1/2 50%%\\rlast'`);
    expect(got).toEqual(['a', 'b', '[==] 1/2 50%', 'last']);
  });

  it('keeps a UTF-8 character whole when the output arrives in pieces that split it', async () => {
    // é is two bytes; the pause makes the pipe deliver them in two reads.
    const { got } = await lines(`printf 'caf\\303'; sleep 0.2; printf '\\251\\n'`);
    expect(got).toEqual(['café']);
  });

  it('gives bytes that are not UTF-8 as latin1 when asked, so names survive', async () => {
    const { got } = await lines(`printf 'x\\351y\\n'`, 'latin1');
    expect(Buffer.from(got[0]!, 'latin1')).toEqual(Buffer.from([0x78, 0xe9, 0x79]));
  });

  it('does not keep the output: 300 MB in lines of 120 kB pass through', async () => {
    let count = 0;
    let longest = 0;
    const r = await run('sh', ['-c', `yes "$(head -c 119999 /dev/zero | tr '\\0' a)" | head -n 2500`], {
      timeoutMs: 120_000,
      onStdoutLine: (l) => {
        count++;
        longest = Math.max(longest, l.length);
      },
    });
    expect(count).toBe(2500);
    expect(longest).toBe(119_999);
    // Kept, 300 MB would pass execa's 100 MB limit and kill the command.
    expect(r.stdout).toBe('');
  });

  it('gives stderr line by line too, and keeps it for the result', async () => {
    const got: string[] = [];
    const r = await run('sh', ['-c', `printf 'one\\ntwo' >&2; echo out`], { timeoutMs: 30_000, onStderrLine: (l) => got.push(l) });
    expect(got).toEqual(['one', 'two']);
    expect(r.stderr).toBe('one\ntwo');
    expect(r.stdout).toBe('out');
  });

  it('kills the command when its signal is aborted, and throws the reason', async () => {
    const stop = new AbortController();
    const started = Date.now();
    const reason = new Error('seen enough');
    const r = run('sh', ['-c', 'echo go >&2; exec sleep 30'], {
      timeoutMs: 60_000,
      signal: stop.signal,
      onStderrLine: (l) => l === 'go' && stop.abort(reason),
    });
    await expect(r).rejects.toBe(reason);
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});
