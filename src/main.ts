import { main } from './cli.js';

// No top-level await: the runtime is bundled as CommonJS (src/entry.mjs runs it).
void main(process.argv).then((code) => {
  process.exitCode = code;
});
