import { defineConfig } from 'vitest/config';

// Three projects so the fast ones run in seconds while working:
//   unit   - pure logic, no root
//   system - real loop devices, squashfs, overlayfs, zram; needs root
//   vm     - the built image booted in QEMU
export default defineConfig({
  test: {
    // Mounts, loop devices and zram are machine-wide: one test file at a time.
    fileParallelism: false,
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          // The apk wrapper's cases run a stand-in apk as child processes,
          // several per case: seconds each on a loaded 2-core machine.
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'system',
          include: ['test/system/**/*.test.ts'],
          globalSetup: ['test/helpers/build.global.ts'],
          testTimeout: 300_000,
          hookTimeout: 300_000,
        },
      },
      {
        test: {
          name: 'vm',
          include: ['test/vm/**/*.test.ts'],
          globalSetup: ['test/helpers/build.global.ts'],
          // QEMU under software emulation, each boot given minutes. One file
          // at a time per vitest run (tests in a file run in order);
          // scripts/run-tests.mjs runs two files side by side, one per core.
          testTimeout: 300_000,
          hookTimeout: 900_000,
        },
      },
    ],
  },
});
