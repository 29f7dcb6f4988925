import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { run } from '../../src/lib/run.js';

/** The one way cairn runs a program. */
describe('run', () => {
  let saved: Record<string, string | undefined>;
  beforeEach(() => {
    saved = { LC_ALL: process.env.LC_ALL, LANG: process.env.LANG, LC_MESSAGES: process.env.LC_MESSAGES };
    // A user's locale, as a German desktop session sets it.
    Object.assign(process.env, { LC_ALL: 'de_DE.UTF-8', LANG: 'de_DE.UTF-8', LC_MESSAGES: 'de_DE.UTF-8' });
  });
  afterEach(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  it('runs every program in the C locale, whatever the user\'s, so the messages cairn matches stay English', async () => {
    expect((await run('sh', ['-c', 'echo "$LC_ALL"'], { timeoutMs: 10_000 })).stdout).toBe('C');
    // Also where the caller passes an environment of its own.
    expect((await run('sh', ['-c', 'echo "$LC_ALL $EXTRA"'], { timeoutMs: 10_000, env: { LC_ALL: 'de_DE.UTF-8', EXTRA: 'x' } })).stdout).toBe('C x');
  });
});
