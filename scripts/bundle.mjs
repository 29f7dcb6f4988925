// Bundles the runtime into one file that images carry without node_modules.
import { build } from 'esbuild';
import { chmod } from 'node:fs/promises';

await build({
  entryPoints: ['src/main.ts'],
  outfile: 'dist/cairn.mjs',
  bundle: true,
  platform: 'node',
  target: 'node18.19',
  format: 'esm',
  minify: false,
  sourcemap: false,
  legalComments: 'none',
  banner: {
    // CommonJS dependencies (proper-lockfile, pino) call require at run time.
    js: "#!/usr/bin/env node\nimport { createRequire as __cairnRequire } from 'node:module';\nconst require = __cairnRequire(import.meta.url);",
  },
});
await chmod('dist/cairn.mjs', 0o755);
