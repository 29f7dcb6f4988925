import { formatBytes } from './format.js';

/**
 * cairn's errors. Each carries a stable `code`, the data a caller needs, and an
 * exit status; only the CLI entry point turns them into messages and exits.
 */
export class CairnError extends Error {
  readonly code: string = 'CAIRN_ERROR';
  readonly exitCode: number = 1;
  /** What the user can do about it, shown under the message. */
  readonly hint?: string;

  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.hint = options?.hint;
  }
}

/** Bad flags, config or arguments: nothing was done. */
export class UsageError extends CairnError {
  override readonly code = 'USAGE';
  override readonly exitCode = 2;
}

export class ToolMissingError extends CairnError {
  override readonly code = 'TOOL_MISSING';
  /** `busybox`: the program found at that path is busybox's applet, which lacks what cairn uses. */
  constructor(readonly tool: string, hint: string, busybox?: string) {
    super(busybox ? `${tool} at ${busybox} is busybox's, which lacks the options cairn uses` : `${tool} was not found`, { hint });
  }
}

export class CommandFailedError extends CairnError {
  override readonly code = 'COMMAND_FAILED';
  constructor(
    readonly command: string,
    readonly exitStatus: number | undefined,
    readonly stderrTail: string,
    options?: { cause?: unknown; hint?: string; timedOut?: boolean },
  ) {
    const how = options?.timedOut
      ? 'timed out'
      : exitStatus === undefined
        ? 'was killed'
        : `exited with status ${exitStatus}`;
    super(`${command} ${how}${stderrTail ? `: ${stderrTail}` : ''}`, options);
  }
}

/**
 * A file mksquashfs kept reading again because its size kept changing: a
 * program is writing it. mksquashfs itself would read it again for as long
 * as the program writes, so cairn stops it.
 */
export class KeepsChangingError extends CairnError {
  override readonly code = 'KEEPS_CHANGING';
  constructor(readonly path: string, readonly reads: number) {
    super(`${path} kept changing while it was read (${reads} reads): a program is writing it; nothing was written, the saved states are as they were`, {
      hint: 'run it again when that program is done, or leave the file out (an exclude= line in /etc/cairn/cairn.conf)',
    });
  }
}

export class PathError extends CairnError {
  override readonly code = 'BAD_PATH';
  constructor(readonly path: string, readonly problem: string, hint?: string) {
    super(`${path}: ${problem}`, { hint });
  }
}

export class NoSpaceError extends CairnError {
  override readonly code = 'NO_SPACE';
  constructor(
    readonly dataDir: string,
    readonly available: number,
    /** The upper layer's size before compression: the most a state can need. */
    readonly upperBytes: number,
  ) {
    super(
      `not enough space on ${dataDir}: ${formatBytes(available)} is free and the new state needs more ` +
        `(the upper layer holds ${formatBytes(upperBytes)} before compression)`,
      {
        hint:
          `free up to ${formatBytes(Math.max(0, upperBytes - available))} on the data partition ` +
          '(older states, files in user/), or exclude large files from saving in /etc/cairn/cairn.conf',
      },
    );
  }
}

/** A partition (the ESP, the data partition) too full for a package operation's files. */
export class PartitionFullError extends CairnError {
  override readonly code = 'NO_SPACE';
  constructor(message: string, hint: string) {
    super(message, { hint });
  }
}

export class VerifyMismatchError extends CairnError {
  override readonly code = 'VERIFY_MISMATCH';
  /** Every difference is of a path that changed after the save began: the same save a moment later will likely succeed. */
  readonly live: boolean;
  constructor(
    readonly image: string,
    readonly differences: readonly { path: string; what: string; expected: string; actual: string; changedDuringSave?: boolean }[],
    /** What wrote the image: the hint says what to do next. */
    by: 'save' | 'checkpoint' = 'save',
  ) {
    const first = differences
      .slice(0, 5)
      .map((d) => `  ${d.path}: ${d.what} in the image is ${d.actual}, in the upper layer ${d.expected}`)
      .join('\n');
    const live = differences.length > 0 && differences.every((d) => d.changedDuringSave === true);
    const hint = live
      ? by === 'save'
        ? 'these files changed while the save ran; save again when they are quiet'
        : 'these files changed while the checkpoint ran; run it again when they are quiet'
      : by === 'save'
        ? 'the image does not hold what the upper layer holds; the saved states were not changed'
        : 'the delta does not hold what changed; nothing was replaced';
    super(`the new image does not match the upper layer (${differences.length} difference(s)):\n${first}`, { hint });
    this.live = live;
  }
}

export class IntegrityError extends CairnError {
  override readonly code = 'INTEGRITY';
  constructor(readonly image: string, readonly problem: string) {
    super(`${image}: ${problem}`);
  }
}

/**
 * Something cairn never makes (a directory, a symbolic link) holds a name
 * the save writes, links, renames or removes. The save leaves it alone and
 * does not start.
 */
export class NameTakenError extends CairnError {
  override readonly code = 'NAME_TAKEN';
  override readonly exitCode = 73; // EX_CANTCREAT, as for the lock's path (LockPathError)
  constructor(readonly path: string, readonly problem: string) {
    super(`${path} is ${problem}: the save uses this name for its own files, so it did not start`, {
      hint: `cairn did not make it and leaves it alone: move it away (for example mv ${path} ${path}.moved), then save again; the saved states were not changed`,
    });
  }
}

export class LockBusyError extends CairnError {
  override readonly code = 'LOCKED';
  override readonly exitCode = 75; // EX_TEMPFAIL: try again later
  constructor(readonly lockPath: string, readonly holder: string) {
    super(`another save is running (${holder})`, {
      hint: 'wait for it to finish, or pass --wait SECONDS to wait for it',
    });
  }
}

/**
 * Something that is not cairn's stands where a lock (a directory) or its
 * owner record (a file) goes: a symbolic link, a file, a device. cairn
 * neither follows nor removes it, so nothing it guards is touched.
 */
export class LockPathError extends CairnError {
  override readonly code = 'LOCK_PATH';
  override readonly exitCode = 73; // EX_CANTCREAT: the lock cannot be made
  constructor(readonly path: string, readonly found: string, readonly expected: 'a directory' | 'a file') {
    super(`${path} is ${found} where cairn's lock expects ${expected}; nothing was changed`, {
      hint: `no cairn makes ${found} there: find out what did, remove ${path}, and run the command again`,
    });
  }
}

/** The user declined, or a clean boot's save was not confirmed. */
export class RefusedError extends CairnError {
  override readonly code = 'REFUSED';
  override readonly exitCode = 3;
}

/** cairn was told to stop (src/lib/run.ts stopRunning). */
export class StoppedError extends CairnError {
  override readonly code = 'STOPPED';
  override readonly exitCode: number;
  constructor(readonly signal: NodeJS.Signals) {
    super(`stopped by ${signal}: what was being written is removed, the saved states are as they were`);
    this.exitCode = 128 + (signal === 'SIGINT' ? 2 : 15);
  }
}

/** A checkpoint the session must not have (it booted clean, or was reset): a timer tries again later and is refused again, quietly. */
export class NoCheckpointError extends CairnError {
  override readonly code = 'NO_CHECKPOINT';
  override readonly exitCode = 75; // EX_TEMPFAIL, as for a busy lock
}

/** An initramfs build found no kernel modules tree, or one depmod never indexed. */
export class ModulesTreeMissingError extends CairnError {
  override readonly code = 'MODULES_TREE_MISSING';
  constructor(
    /** The directory searched: it should hold lib/modules/<kernelVersion>. */
    readonly root: string,
    readonly kernelVersion: string,
    readonly problem?: string,
  ) {
    super(
      problem
        ? `the kernel modules tree for ${kernelVersion} under ${root}: ${problem}`
        : `no kernel modules for ${kernelVersion} under ${root} (no lib/modules/${kernelVersion} or usr/lib/modules/${kernelVersion})`,
      {
        hint: problem
          ? `run depmod -b ${root} ${kernelVersion} (a kernel package's install does this)`
          : 'pass --modules-dir the directory that holds lib/modules/<kver> (/ for this machine) and the exact --kver',
      },
    );
  }
}

/** A module the boot cannot do without is neither a module file nor built into the kernel. */
export class ModuleMissingError extends CairnError {
  override readonly code = 'MODULE_MISSING';
  constructor(readonly module: string, readonly kernelVersion: string, readonly detail?: string) {
    super(`kernel ${kernelVersion} has no module ${module}${detail ? ` (${detail})` : ', neither as a file nor built in'}`, {
      hint: `use a kernel built with ${module} (as a module or built in), or check --kver and --modules-dir`,
    });
  }
}

/** A program for the initramfs needs a shared library the build host cannot find. */
export class LibraryMissingError extends CairnError {
  override readonly code = 'LIBRARY_MISSING';
  constructor(readonly program: string, readonly library: string) {
    super(`${program} needs ${library}, which was not found on this machine`, {
      hint: `install the package that provides ${library}, or use a statically linked ${program}`,
    });
  }
}

/** The busybox for an initramfs lacks applets the early boot runs. */
export class AppletMissingError extends CairnError {
  override readonly code = 'APPLET_MISSING';
  constructor(readonly busybox: string, readonly applets: readonly string[], hint: string) {
    super(`${busybox} lacks the applet(s) the early boot needs: ${applets.join(', ')}`, { hint });
  }
}

/**
 * A file given to `cairn restore` (or read back by `cairn backup`) that is
 * not a whole backup this cairn can read: not a backup at all, one from a
 * newer cairn, or damaged or cut short. Nothing was changed.
 */
export class BackupFileError extends CairnError {
  override readonly code = 'BACKUP_FILE';
  override readonly exitCode = 65; // EX_DATAERR: the input is not what it must be
  constructor(
    readonly file: string,
    readonly problem: string,
    readonly kind: 'not-a-backup' | 'newer' | 'damaged',
    hint?: string,
  ) {
    super(`${file}: ${problem}`, { hint });
  }
}
