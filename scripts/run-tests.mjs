// Runs the vitest suite in two lanes, one per core, and ends with a table of
// wall time per phase and one plain line, "tests: N passed, N failed, N
// skipped", that any reader of the log can find.
//
// Lane 1 runs the unit and then the system tests; both lanes then take the
// VM test files from one queue, longest first. A VM file is one QEMU guest
// at a time under software emulation, which keeps one core busy: two files
// side by side take about half the time of one after the other. Each file
// is its own vitest run, its output printed whole when it ends so two lanes
// never interleave. Mounts, loop devices and zram stay safe to share: the
// system tests name their own loop devices and mounts by path, and the VM
// files touch no zram and set up loop devices only over their own files.
//
// CAIRN_CI_PHASES names a file of "<phase> <seconds>" lines (what .ci/run
// timed before this: apt, npm) to put at the head of the table.
// CAIRN_TEST_LANES=1 runs everything in one lane. Arguments are passed to
// one plain vitest run instead (e.g. a single file while working).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * What each phase may take on the 2-core build machine (seconds), from
 * measured runs with room for a slow day. A phase past its budget is named
 * in the table; it does not fail the run.
 */
const BUDGETS = {
  unit: 180,
  system: 900,
  'test/vm/stick.test.ts': 1800,
  'test/vm/stick-update.test.ts': 1200,
  'test/vm/usb-stick.test.ts': 900,
  'test/vm/luks-stick.test.ts': 600,
  'test/vm/alpine.test.ts': 600,
  'test/vm/lifecycle.test.ts': 600,
  'test/vm/boot-counting.test.ts': 600,
  'test/vm/boot.test.ts': 240,
  'test/vm/grub-update.test.ts': 180,
};
/** A VM file without a budget above. */
const VM_DEFAULT_BUDGET = 600;

const started = Date.now();
const dir = mkdtempSync(join(tmpdir(), 'cairn-vitest-'));
const lanes = Math.max(1, Number(process.env.CAIRN_TEST_LANES ?? 2));
// Names this run, so that what one VM file builds for the run (the user's-day
// stick, test/helpers/vm-stick.ts) is reused by the others and never by a later run.
process.env.CAIRN_TEST_RUN = `${Date.now()}-${process.pid}`;

/** One vitest run; resolves with its counts, its output and its wall time. */
function vitest(name, args, { live }) {
  const json = join(dir, `${name.replace(/[^A-Za-z0-9]+/g, '-')}.json`);
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn('npx', ['vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${json}`, ...args], {
      stdio: live ? 'inherit' : ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, FORCE_COLOR: '0' },
    });
    let output = '';
    child.stdout?.on('data', (b) => (output += b));
    child.stderr?.on('data', (b) => (output += b));
    child.on('close', (code) => {
      const seconds = (Date.now() - t0) / 1000;
      let counts = { passed: 0, failed: 1, skipped: 0, total: 0, note: 'no results' };
      if (existsSync(json)) {
        const res = JSON.parse(readFileSync(json, 'utf8'));
        counts = {
          passed: res.numPassedTests,
          failed: res.numFailedTests,
          skipped: res.numPendingTests + res.numTodoTests,
          total: res.numTotalTests,
          note: '',
        };
        if (code !== 0 && counts.failed === 0) counts = { ...counts, failed: 1, note: `vitest exited ${code}` };
      }
      resolve({ name, code, seconds, output, ...counts });
    });
  });
}

function clock(seconds) {
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

/** The VM test files, longest budget first. */
function vmFiles() {
  const files = readdirSync('test/vm').filter((f) => f.endsWith('.test.ts')).map((f) => `test/vm/${f}`);
  return files.sort((a, b) => (BUDGETS[b] ?? VM_DEFAULT_BUDGET) - (BUDGETS[a] ?? VM_DEFAULT_BUDGET));
}

async function runAll() {
  const results = [];
  const queue = vmFiles();
  const phase = async (n, name, args) => {
    process.stdout.write(`\n=== lane ${n}: ${name} (started at ${clock((Date.now() - started) / 1000)}) ===\n`);
    const r = await vitest(name, args, { live: lanes === 1 });
    if (lanes > 1) process.stdout.write(`\n=== lane ${n}: ${name}: output ===\n${r.output}`);
    results.push({ ...r, lane: n });
  };
  const lane = async (n, first) => {
    for (const [name, args] of first) await phase(n, name, args);
    for (let file = queue.shift(); file; file = queue.shift()) await phase(n, file, ['--project', 'vm', file]);
  };
  const head = [
    ['unit', ['--project', 'unit']],
    ['system', ['--project', 'system']],
  ];
  await Promise.all(Array.from({ length: lanes }, (_, i) => lane(i + 1, i === 0 ? head : [])));
  return results;
}

function table(results) {
  const rows = [];
  const file = process.env.CAIRN_CI_PHASES;
  if (file && existsSync(file)) {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const [name, secs] = line.trim().split(/\s+/);
      if (name && secs) rows.push({ name, seconds: Number(secs), lane: '', budget: undefined, tests: '' });
    }
  }
  for (const r of results) {
    const budget = BUDGETS[r.name] ?? (r.name.startsWith('test/vm/') ? VM_DEFAULT_BUDGET : undefined);
    rows.push({ name: r.name, seconds: r.seconds, lane: String(r.lane), budget, tests: `${r.passed}/${r.total}${r.failed ? ` (${r.failed} failed)` : ''}` });
  }
  const width = Math.max(...rows.map((r) => r.name.length), 5);
  const lines = ['', 'wall time per phase:', `${'phase'.padEnd(width)}  lane  wall    budget  tests`];
  for (const r of rows) {
    const over = r.budget !== undefined && r.seconds > r.budget ? `  WARNING: over its budget of ${clock(r.budget)}` : '';
    lines.push(`${r.name.padEnd(width)}  ${r.lane.padEnd(4)}  ${clock(r.seconds).padStart(6)}  ${(r.budget ? clock(r.budget) : '').padStart(6)}  ${r.tests}${over}`);
  }
  const ci = rows.filter((r) => r.lane === '').reduce((a, r) => a + r.seconds, 0);
  lines.push(`${'tests (wall)'.padEnd(width)}        ${clock((Date.now() - started) / 1000).padStart(6)}`);
  if (ci) lines.push(`${'total (wall)'.padEnd(width)}        ${clock(ci + (Date.now() - started) / 1000).padStart(6)}`);
  return lines.join('\n');
}

let status;
if (process.argv.length > 2) {
  const r = await vitest('vitest', process.argv.slice(2), { live: true });
  console.log(`tests: ${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped`);
  status = r.code ?? 1;
  if (r.total === 0) status = 1;
} else {
  const results = await runAll();
  console.log(table(results));
  const sum = (k) => results.reduce((a, r) => a + r[k], 0);
  for (const r of results.filter((x) => x.failed)) console.log(`failed: ${r.name}${r.note ? ` (${r.note})` : ''}`);
  if (sum('total') === 0) console.log('no test ran');
  console.log(`tests: ${sum('passed')} passed, ${sum('failed')} failed, ${sum('skipped')} skipped`);
  status = sum('failed') === 0 && sum('total') > 0 && results.every((r) => r.code === 0) ? 0 : 1;
}
rmSync(dir, { recursive: true, force: true });
process.exit(status);
