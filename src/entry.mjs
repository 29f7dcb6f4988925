#!/usr/bin/env node
// cairn's command: bundled as dist/cairn.mjs, installed as
// /usr/lib/cairn/cairn.mjs. It runs the runtime (cairn.cjs beside it, the
// whole of src/ in one CommonJS file) compiled with V8's code cache when one
// is there: cairn.cjs.cache, which the image build makes with the image's
// own Node.js (src/image/codeCache.ts). Starting then skips compiling a
// megabyte of code, seconds on a slow machine at every command, the boot's
// and the shutdown save's too. V8 refuses a cache made by another Node.js
// or for other code, and the runtime then compiles as it would without one.
//
// CAIRN_CODE_CACHE=make writes the cache when the command ends (the image
// build); CAIRN_CODE_CACHE=check says on stderr whether one was used.
import { createHash } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';

const file = join(dirname(fileURLToPath(import.meta.url)), 'cairn.cjs');
const cacheFile = `${file}.cache`;
const digest = (data) => createHash('sha256').update(data).digest();
const code = readFileSync(file);
// The cache is the sha256 of the code it was made for, its own sha256, then
// V8's data: V8 checks the data against the code's length only, and not
// that the data is whole, and a damaged byte it takes in can crash the command.
let cache;
try {
  cache = readFileSync(cacheFile);
} catch {
  // No cache: compiled as usual.
}
const fits = (c) => c.length > 64 && c.subarray(0, 32).equals(digest(code)) && c.subarray(32, 64).equals(digest(c.subarray(64)));
const cachedData = cache && fits(cache) ? cache.subarray(64) : undefined;
// The wrapper Node.js puts around a CommonJS module, on the first line so line numbers stay.
const script = new Script(`(function (exports, require, module, __filename, __dirname) {${code.toString('utf8')}\n})`, {
  filename: file,
  cachedData,
});
const mode = process.env.CAIRN_CODE_CACHE;
if (mode === 'check') {
  const how = cache === undefined ? 'missing' : cachedData === undefined || script.cachedDataRejected ? 'refused' : 'used';
  process.stderr.write(`cairn: code cache ${how}\n`);
} else if (mode === 'make') {
  // At the end, so the functions the command compiled are in it too.
  process.once('exit', () => {
    const data = script.createCachedData();
    writeFileSync(`${cacheFile}.tmp`, Buffer.concat([digest(code), digest(data), data]));
    renameSync(`${cacheFile}.tmp`, cacheFile);
  });
}
const module = { exports: {} };
script.runInThisContext()(module.exports, createRequire(file), module, file, dirname(file));
