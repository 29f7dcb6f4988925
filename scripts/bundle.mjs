// Bundles the runtime into one file that images carry without node_modules
// (and, when asked, the benchmarks, which import the runtime's own modules).
import { build } from 'esbuild';
import { chmod, copyFile, readFile, rename, rm } from 'node:fs/promises';
import { resolve } from 'node:path';

// `import text from './file?raw'` (as vitest reads it): the file's text, built in.
const rawText = {
  name: 'raw-text',
  setup(b) {
    b.onResolve({ filter: /\?raw$/ }, (args) => ({ path: resolve(args.resolveDir, args.path.slice(0, -4)), namespace: 'raw-text' }));
    b.onLoad({ filter: /.*/, namespace: 'raw-text' }, async (args) => ({ contents: await readFile(args.path, 'utf8'), loader: 'text' }));
  },
};

const targets = {
  // The command: src/entry.mjs, which runs the runtime below through V8's code cache.
  cairn: { entry: 'src/main.ts', out: 'dist/cairn.cjs', format: 'cjs', starter: { from: 'src/entry.mjs', out: 'dist/cairn.mjs' } },
  bench: { entry: 'bench/save.ts', out: 'dist/bench-save.mjs' },
  'bench-unpack': { entry: 'bench/unpack.ts', out: 'dist/bench-unpack.mjs' },
  'bench-checkpoint': { entry: 'bench/checkpoint.ts', out: 'dist/bench-checkpoint.mjs' },
};

/** Written beside and renamed: tests running side by side bundle too, and one of them may be starting the CLI while another rewrites it. */
async function replace(out, write) {
  const partial = `${out}.${process.pid}.partial`;
  await write(partial);
  await chmod(partial, 0o755);
  await rename(partial, out);
}

for (const name of process.argv.slice(2).length ? process.argv.slice(2) : ['cairn']) {
  const t = targets[name];
  if (!t) throw new Error(`unknown bundle "${name}"; known: ${Object.keys(targets).join(', ')}`);
  const cjs = t.format === 'cjs';
  await replace(t.out, (partial) =>
    build({
      entryPoints: [t.entry],
      outfile: partial,
      bundle: true,
      platform: 'node',
      target: 'node18.19',
      format: cjs ? 'cjs' : 'esm',
      legalComments: 'none',
      plugins: [rawText],
      // The runtime finds its own files (openrc/, initramfs/) from where it is.
      ...(cjs ? { define: { 'import.meta.url': '__cairnUrl' } } : {}),
      banner: {
        js: cjs
          ? "const __cairnUrl = require('node:url').pathToFileURL(__filename).href;"
          : // CommonJS dependencies (proper-lockfile, pino) call require at run time.
            "#!/usr/bin/env node\nimport { createRequire as __cairnRequire } from 'node:module';\nconst require = __cairnRequire(import.meta.url);",
      },
    }),
  );
  // The runtime changed: a code cache beside it would be refused anyway.
  if (cjs) await rm(`${t.out}.cache`, { force: true });
  if (t.starter) await replace(t.starter.out, (partial) => copyFile(t.starter.from, partial));
}
