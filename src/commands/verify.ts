import { Command } from 'commander';
import { formatBytes, formatDate } from '../lib/format.js';
import { verifyImage } from '../verifyImage.js';

export function verifyCommand(): Command {
  return new Command('verify')
    .description('check a saved state image: its seal and checksum, and that it mounts and reads')
    .argument('<file>', 'the state image, e.g. /persist/upperfs.squashfs')
    .option('--json', 'print the result as JSON')
    .action(async (file: string, flags: { json?: boolean }) => {
      const r = await verifyImage(file);
      process.stdout.write(
        flags.json
          ? `${JSON.stringify(r, null, 2)}\n`
          : `${file}: intact, ${r.files} files, ${formatBytes(r.bytesRead)} read, saved ${formatDate(r.seal.created)}\n`,
      );
    });
}
