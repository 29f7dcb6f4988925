import { execFileSync } from 'node:child_process';

// System tests run the bundled CLI, as an image would: build it first.
export default function setup(): void {
  execFileSync(process.execPath, ['scripts/bundle.mjs'], { stdio: 'inherit' });
}
