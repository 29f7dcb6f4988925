/**
 * Writes one checkpoint delta in a process of its own, so that a test can
 * kill it mid-write as a power cut or a crash would stop it. Options as
 * JSON in argv[2] (src/checkpoint/write.ts DeltaOptions); prints the report.
 */
import { writeDelta, type DeltaOptions } from '../../src/checkpoint/write.js';

const options = JSON.parse(process.argv[2] ?? '{}') as DeltaOptions;
const report = await writeDelta(options);
process.stdout.write(`${JSON.stringify(report)}\n`);
