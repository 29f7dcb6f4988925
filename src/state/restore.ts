import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, readdir, rename, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { BootRecord } from '../bootRecord.js';
import { kernelFiles, parseBootState, readBootState, writeBootState } from '../esp/bootState.js';
import type { Esp } from '../esp/esp.js';
import { fsyncDir, renameDurably } from '../lib/durable.js';
import { IntegrityError, NameTakenError, PathError } from '../lib/errors.js';
import { log } from '../lib/log.js';
import { withTempDir } from '../lib/resources.js';
import { run } from '../lib/run.js';
import { BACKUP, DATA, MODES } from '../names.js';
import { nextBootState } from '../packages/kernel.js';
import { withSaveLock, type SaveLockOptions } from '../save/lock.js';
import { intactFrom, markDamaged } from '../save/origin.js';
import { applyOp, planRotation } from '../save/rotate.js';
import { extractMember, memberOf, readBackup, readMember } from './backup.js';
import type { BackupManifest, KernelFileRef } from './backupFormat.js';
import { holdSkippedStates } from './held.js';
import { markSessionNotToSave } from './reset.js';
import { checkIntegrity, notAStateImage, sha256Of } from './seal.js';
import { listStates } from './states.js';

export interface RestoreOptions {
  file: string;
  dataDir: string;
  lock: SaveLockOptions;
  /** How this session booted: its rotation rules decide which state becomes the backup, as a save's do. */
  bootRecord: BootRecord | undefined;
  /** The session's run directory, where the mark that keeps its saves from writing it back goes. */
  runDir: string | undefined;
  /** The ESP, for the kernels' state; undefined leaves the kernels as they are. */
  esp: Esp | undefined;
  /** The kernel that runs now, kept in the menu as the second choice. */
  runningKernel: string | undefined;
  /** Asked once the whole file is verified, before anything changes; false stops there. */
  confirm: (manifest: BackupManifest) => Promise<boolean>;
  /** Run only the first n steps, then stop as a crash would. For crash-safety tests. */
  stopAfterSteps?: number;
}

export interface RestoreReport {
  /** What became of the state: installed as the newest, already the newest, or none in the backup. */
  state: 'installed' | 'already-newest' | 'none';
  backup: string | undefined;
  kept: { state: string; as: string }[];
  kernel: string | undefined;
  user: boolean;
  warnings: string[];
  stepsRun: number;
  stepsTotal: number;
  /** False when the user declined: nothing was changed. */
  confirmed: boolean;
}

interface Step {
  name: string;
  run: () => Promise<void>;
}

/**
 * `cairn restore FILE` (docs/backup.md). The whole file is verified before
 * anything changes. Then, under the save lock, a list of named steps, each
 * leaving a stick that boots:
 *
 *   - the state is copied to the save's temp name (never booted, removed by
 *     the next save if left), checked whole, and rotated in as a save's new
 *     state is: the state this session came from becomes the backup, and
 *     nothing the user has not seen replaced is dropped;
 *   - the backup's kernel, when the stick does not boot it, is installed as
 *     a kernel update is, the current one kept as the menu's second choice;
 *   - user/ is unpacked beside itself, then swapped in by two renames.
 */
export async function restoreBackup(o: RestoreOptions): Promise<RestoreReport> {
  const manifest = await readBackup(o.file);
  const report: RestoreReport = { state: 'none', backup: undefined, kept: [], kernel: undefined, user: false, warnings: [], stepsRun: 0, stepsTotal: 0, confirmed: false };
  if (!(await o.confirm(manifest))) return report;
  report.confirmed = true;
  return withSaveLock(o.dataDir, o.lock, async (lock) => {
    const temp = join(o.dataDir, DATA.temp);
    const steps: Step[] = [
      {
        name: 'mark this session not to be saved; clear what an interrupted save or restore left',
        run: async () => {
          // First: from here on the stick holds the backup's state, which the
          // session's own shutdown save must not write over.
          if (o.runDir) await markSessionNotToSave(o.runDir, 'cairn restore');
          await removeTemp(temp);
          await finishUserSwap(o.dataDir);
          await rm(join(o.dataDir, BACKUP.userPartial), { recursive: true, force: true });
          await rm(join(o.dataDir, BACKUP.userImage), { force: true });
        },
      },
    ];
    const state = manifest.states[0];
    let at = 0;
    // The rotation is planned by a step and runs right after it.
    const next = (more: Step[]) => steps.splice(at + 1, 0, ...more);
    if (state) steps.push(...(await stateSteps(o, manifest, state, temp, report, () => lock.intact(), next)));
    if (manifest.kernels && o.esp) {
      steps.push({ name: 'install the backup\'s kernel if the stick does not boot it', run: () => restoreKernel(o, manifest, report) });
    } else if (manifest.kernels) {
      report.warnings.push('no ESP was given: the kernels were left as they are');
    }
    if (manifest.user) steps.push(...userSteps(o, manifest, manifest.user.member, report));

    report.stepsTotal = steps.length;
    try {
      for (; at < steps.length; at++) {
        if (o.stopAfterSteps !== undefined && report.stepsRun >= o.stopAfterSteps) return report;
        const step = steps[at]!;
        log.info({ step: step.name }, 'restore step');
        await step.run();
        report.stepsRun++;
        report.stepsTotal = steps.length;
      }
    } catch (e) {
      // Until the rename into the newest name the temp image is only litter.
      if (report.state !== 'installed') await removeTemp(temp).catch(() => undefined);
      await rm(join(o.dataDir, BACKUP.userPartial), { recursive: true, force: true }).catch(() => undefined);
      await rm(join(o.dataDir, BACKUP.userImage), { force: true }).catch(() => undefined);
      throw e;
    }
    return report;
  });
}

/**
 * The state's steps. The newest state already being the backup's (same
 * seal, whole) needs none: rotating it in again would only push out the
 * backup.
 */
async function stateSteps(
  o: RestoreOptions,
  manifest: BackupManifest,
  state: BackupManifest['states'][number],
  temp: string,
  report: RestoreReport,
  lockIntact: () => boolean,
  next: (steps: Step[]) => void,
): Promise<Step[]> {
  const member = memberOf(manifest, state.member);
  const newest = (await listStates(o.dataDir)).find((s) => s.role === 'newest');
  if (newest?.check.ok && newest.check.seal.id === state.id && state.id) {
    const whole = await checkIntegrity(newest.path);
    if (whole.ok) {
      report.state = 'already-newest';
      return [];
    }
  }
  return [
    {
      name: 'copy the state into the temp image, fsync it and check it whole',
      run: async () => {
        await extractMember(o.file, member, temp, MODES.state);
        const check = await checkIntegrity(temp);
        if (!check.ok) throw new IntegrityError(temp, `the backup's state does not check: ${check.problem}`);
      },
    },
    {
      name: 'plan the rotation as a save plans it',
      run: async () => {
        const before = await listStates(o.dataDir);
        const held = await holdSkippedStates(o.dataDir, before, o.bootRecord);
        const { from, damaged } = await intactFrom(before, o.bootRecord?.used === 'clean' ? undefined : o.bootRecord?.stateId);
        const plan = planRotation({
          states: markDamaged(before, damaged),
          fromId: from?.check.seal?.id,
          session: o.bootRecord?.session || undefined,
          // Nothing is pruned: a restore only adds, and the next save prunes.
          generations: Number.MAX_SAFE_INTEGER,
          held: new Set(held.map((h) => h.identity)),
        });
        report.backup = plan.backup?.name;
        report.kept = plan.kept.map((k) => ({ state: k.state.name, as: k.as }));
        next(
          plan.ops.map((op) => ({
            name: op.why,
            run: async () => {
              if (!lockIntact()) throw new IntegrityError(o.dataDir, 'the save lock was lost; stopping before rotation');
              await applyOp(o.dataDir, op);
              if (op.op === 'rename' && op.from === DATA.temp) report.state = 'installed';
            },
          })),
        );
      },
    },
  ];
}

/** A leftover temp image: removed when it is a regular file, refused when something else holds the name. */
async function removeTemp(temp: string): Promise<void> {
  const st = await lstat(temp).catch(() => undefined);
  if (!st) return;
  const odd = notAStateImage(st);
  if (odd) throw new NameTakenError(temp, odd);
  await rm(temp);
}

/**
 * The kernel the backup's state was made with, made the stick's default
 * when the stick does not already boot it: its modules image onto the data
 * partition (temp, fsync, rename), its kernel and initramfs onto the ESP
 * (Esp.install: whole or not at all), then the boot record and menu, with
 * the kernel the stick booted until now kept as the second choice. A power
 * cut before the record is written leaves the old menu, which boots.
 */
async function restoreKernel(o: RestoreOptions, manifest: BackupManifest, report: RestoreReport): Promise<void> {
  const k = manifest.kernels!;
  const esp = o.esp!;
  const current = await readBootState(esp);
  const theirs = parseBootState((await readMember(o.file, memberOf(manifest, k.bootState))).toString('utf8'), `${o.file}: boot-state`);
  if (theirs.luks !== current.luks) {
    report.warnings.push(
      `the backup's kernel ${k.release} was not installed: its initramfs was built for a stick ${theirs.luks ? 'with' : 'without'} LUKS; the stick keeps booting ${current.kernel.release}`,
    );
    return;
  }
  const onStick = await Promise.all(k.files.map(async (f) => ({ f, same: await sameOnStick(o, esp, f, memberOf(manifest, f.member).sha256) })));
  if (current.kernel.release === k.release && onStick.every((x) => x.same)) return;
  await withTempDir('cairn-restore-', async (work) => {
    for (const { f, same } of onStick) {
      if (same) continue;
      const member = memberOf(manifest, f.member);
      if (f.place === 'data') {
        const target = join(o.dataDir, f.path);
        await extractMember(o.file, member, `${target}.tmp`, 0o644);
        await renameDurably(`${target}.tmp`, target);
      } else {
        const local = join(work, f.member);
        await extractMember(o.file, member, local, 0o600);
        await esp.install(f.path, { file: local });
      }
    }
  });
  await writeBootState(esp, o.dataDir, nextBootState(current, kernelFiles(k.release), o.runningKernel));
  report.kernel = k.release;
}

async function sameOnStick(o: RestoreOptions, esp: Esp, f: KernelFileRef, sha256: string): Promise<boolean> {
  if (f.place === 'data') {
    const path = join(o.dataDir, f.path);
    if (!existsSync(path)) return false;
    return (await sha256Of(path, (await lstat(path)).size)) === sha256;
  }
  const bytes = await esp.read(f.path);
  return bytes !== undefined && createHash('sha256').update(bytes).digest('hex') === sha256;
}

/**
 * user/ is put in place whole or not at all: unpacked beside itself under a
 * temp name, flushed, renamed to a second name that says it is complete,
 * then swapped in by two renames. A cut between those two leaves no user/
 * for an instant; the next restore (finishUserSwap) finishes the swap.
 */
function userSteps(o: RestoreOptions, manifest: BackupManifest, member: string, report: RestoreReport): Step[] {
  const at = (name: string) => join(o.dataDir, name);
  return [
    {
      name: 'unpack user/ beside itself and flush it',
      run: async () => {
        await extractMember(o.file, memberOf(manifest, member), at(BACKUP.userImage), 0o600);
        // As root, unsquashfs puts back owners, modes, times, xattrs and hard links.
        await run('unsquashfs', ['-no-progress', '-quiet', '-d', at(BACKUP.userPartial), at(BACKUP.userImage)], {
          timeoutMs: 6 * 3600_000,
          dieWithParent: true,
          hint: 'install squashfs-tools',
        });
        await rm(at(BACKUP.userImage), { force: true });
        await run('sync', ['-f', at(BACKUP.userPartial)], { timeoutMs: 3600_000 });
        await renameDurably(at(BACKUP.userPartial), at(BACKUP.userReady));
      },
    },
    {
      name: 'swap the unpacked user/ in',
      run: async () => {
        if (existsSync(at(DATA.userDir))) await rename(at(DATA.userDir), at(BACKUP.userOld));
        await renameDurably(at(BACKUP.userReady), at(DATA.userDir));
        report.user = true;
      },
    },
    {
      name: 'remove the user/ it replaced',
      run: async () => {
        await rm(at(BACKUP.userOld), { recursive: true, force: true });
        await fsyncDir(o.dataDir);
      },
    },
  ];
}

/**
 * Finishes a swap of user/ that a cut interrupted. The restored copy is
 * complete once it has its ready name; with no user/ beside it (or the
 * empty one the boot's user-dirs service makes in its place), it goes in.
 * A user/ replaced by a finished swap is removed.
 */
export async function finishUserSwap(dataDir: string): Promise<void> {
  const at = (name: string) => join(dataDir, name);
  const ready = existsSync(at(BACKUP.userReady));
  const old = existsSync(at(BACKUP.userOld));
  const user = existsSync(at(DATA.userDir));
  if (ready && (old || !user)) {
    if (user) {
      if ((await readdir(at(DATA.userDir))).length) {
        throw new PathError(at(DATA.userDir), `a restore was cut while swapping it: ${BACKUP.userOld} holds the user folder before it and ${BACKUP.userReady} the restored one`, 'move the files you want into user/, remove the other two, and run the restore again');
      }
      await rmdir(at(DATA.userDir));
    }
    await renameDurably(at(BACKUP.userReady), at(DATA.userDir));
  } else if (ready) {
    // Made by a restore cut before its swap, with user/ untouched: this one unpacks its own.
    await rm(at(BACKUP.userReady), { recursive: true, force: true });
  }
  if (old && existsSync(at(DATA.userDir))) await rm(at(BACKUP.userOld), { recursive: true, force: true });
  await fsyncDir(dataDir);
}
