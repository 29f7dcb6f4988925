// Runs the vitest suite and ends with one plain line, "tests: N passed, N
// failed, N skipped", that any reader of the log can find. The exit status
// is vitest's own.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = mkdtempSync(join(tmpdir(), 'cairn-vitest-'));
const json = join(dir, 'results.json');
const r = spawnSync(
  'npx',
  ['vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${json}`, ...process.argv.slice(2)],
  { stdio: 'inherit' },
);
let status = r.status ?? 1;
try {
  const res = JSON.parse(readFileSync(json, 'utf8'));
  const skipped = res.numPendingTests + res.numTodoTests;
  console.log(`tests: ${res.numPassedTests} passed, ${res.numFailedTests} failed, ${skipped} skipped`);
  if (res.numTotalTests === 0) {
    console.log('no test ran');
    status = 1;
  }
} catch (e) {
  console.log(`tests: no results (${e.message})`);
  status = status || 1;
}
rmSync(dir, { recursive: true, force: true });
process.exit(status);
