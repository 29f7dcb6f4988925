// Bundles the runtime into one file that images carry without node_modules
// (and, when asked, the benchmarks, which import the runtime's own modules).
import { build } from 'esbuild';
import { chmod } from 'node:fs/promises';

const targets = {
  cairn: { entry: 'src/main.ts', out: 'dist/cairn.mjs' },
  bench: { entry: 'bench/save.ts', out: 'dist/bench-save.mjs' },
  'bench-unpack': { entry: 'bench/unpack.ts', out: 'dist/bench-unpack.mjs' },
};

for (const name of process.argv.slice(2).length ? process.argv.slice(2) : ['cairn']) {
  const t = targets[name];
  if (!t) throw new Error(`unknown bundle "${name}"; known: ${Object.keys(targets).join(', ')}`);
  await build({
    entryPoints: [t.entry],
    outfile: t.out,
    bundle: true,
    platform: 'node',
    target: 'node18.19',
    format: 'esm',
    legalComments: 'none',
    banner: {
      // CommonJS dependencies (proper-lockfile, pino) call require at run time.
      js: "#!/usr/bin/env node\nimport { createRequire as __cairnRequire } from 'node:module';\nconst require = __cairnRequire(import.meta.url);",
    },
  });
  await chmod(t.out, 0o755);
}
