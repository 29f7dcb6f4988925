import { randomUUID } from 'node:crypto';
import { access, chmod, constants, lstat, readdir, realpath, stat, statfs, unlink, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join, sep } from 'node:path';
import type { BootRecord } from '../bootRecord.js';
import { recordSavedBaseline } from '../changes/baseline.js';
import type { Config } from '../config.js';
import { appendDurably, fsyncFile, linkDurably } from '../lib/durable.js';
import { IntegrityError, NameTakenError, NoCheckpointError, NoSpaceError, PathError, RefusedError, VerifyMismatchError } from '../lib/errors.js';
import { log } from '../lib/log.js';
import {
  detachLoop,
  loopUsesDirectIo,
  mountsOf,
  removeEmptyDir,
  unmount,
  withLoopDevice,
  withMount,
  withTempDir,
} from '../lib/resources.js';
import { run } from '../lib/run.js';
import { checkpointLink, DATA, MODES } from '../names.js';
import { heldName, holdSkippedStates, type HeldState } from '../state/held.js';
import { sessionMarkReason } from '../state/reset.js';
import { encodeSeal, notAStateImage, readSeal, type Seal } from '../state/seal.js';
import { cksumTool, sha256InWorker } from '../state/sums.js';
import { isStateName, listLinks, listStates, type StateFile } from '../state/states.js';
import { compareTrees } from './compare.js';
import { compileExcludes, type ExcludeMatcher } from './exclude.js';
import { withSaveLock } from './lock.js';
import { intactFrom, markDamaged } from './origin.js';
import { applyOp, planRotation, type RotationPlan } from './rotate.js';
import { squash } from './squash.js';
import { chainIds, collectLinks, linkChain, linksOf } from '../checkpoint/chain.js';
import { deltaTemp, writeDelta } from '../checkpoint/write.js';
import { resolveBaseline } from '../changes/baseline.js';
import { describeLeftOut, walkTree, type Walk } from './tree.js';

export type SavePhase = 'locking' | 'preparing' | 'squashing' | 'verifying' | 'sealing' | 'rotating' | 'done';

export interface SaveOptions {
  upperDir: string;
  dataDir: string;
  /** How this session booted; undefined outside a booted system. */
  bootRecord: BootRecord | undefined;
  /** The kernel's id for this boot: tells whether a lock's owner is still alive. */
  session: string;
  config: Config;
  /**
   * Asked only where saving is a deliberate act: the user booted clean on
   * purpose, or reset the stick in this session. WHY says which.
   */
  confirmCleanSave: (why: string) => Promise<boolean>;
  /** The session's run directory (the boot record's), where `cairn reset` leaves its mark. */
  runDir?: string;
  onPhase?: (phase: SavePhase) => void;
  /** Progress of the current phase, 0 to 1. */
  onProgress?: (phase: SavePhase, fraction: number) => void;
  onWaitForLock?: (holder: string) => void;
  /** A warning the user must see before the save ends (the report repeats it). */
  onWarning?: (line: string) => void;
  /**
   * 'auto' (the default) writes a checkpoint delta over the state this
   * session's upper layer was last unpacked from or saved as, when that
   * state's chain is short and light (config chainMax, chainRatio), and a
   * whole state otherwise; 'full' always writes a whole state.
   */
  kind?: 'auto' | 'full';
  /**
   * A checkpoint (`cairn checkpoint`): a session that booted clean or was
   * reset is refused rather than asked about, and nothing is written when
   * nothing changed since the newest state.
   */
  checkpoint?: boolean;
  /**
   * Run only the first n steps, then return as a crash would leave things
   * (the lock is released, nothing is cleaned up). For crash-safety tests.
   */
  stopAfterSteps?: number;
}

export interface SaveReport {
  image: string;
  /** What was written: a whole state, a checkpoint delta, or nothing (nothing changed since the newest state). */
  kind: 'state' | 'delta' | 'none';
  /** For a delta: the links of its chain, the base and the delta included. */
  chainLinks?: number;
  /** Checkpoint links no state reaches any more, removed after the rotation. */
  linksRemoved: string[];
  bytes: number;
  files: number;
  upperBytes: number;
  seconds: number;
  phaseSeconds: Partial<Record<SavePhase, number>>;
  /** The state this session came from, as a boot name of the time before the save. */
  bootedFrom: string | undefined;
  backup: string | undefined;
  kept: { state: string; as: string }[];
  pruned: string[];
  dropped: { state: string; reason: string }[];
  /** States a boot fell back past, kept until the user acts (src/state/held.ts), by their names before the save. */
  held: { state: string; reason: string }[];
  warnings: string[];
  /** Peak memory of the cairn process itself (mksquashfs runs apart, bounded by -mem). */
  maxRssKiB: number;
  /** Steps run; less than stepsTotal only when stopAfterSteps cut the save short. */
  stepsRun: number;
  stepsTotal: number;
}

/** One named, crash-safe step of a save. Steps run in order; a crash may stop between any two. */
interface Step {
  name: string;
  phase: SavePhase;
  run: () => Promise<void>;
}

/**
 * DESIGN.md "Save", steps 1 to 7. Each step leaves the data partition in a
 * state from which the previous saved states boot, so a crash between any two
 * loses at most the save in progress.
 */
export async function runSave(options: SaveOptions): Promise<SaveReport> {
  const started = Date.now();
  const { config, dataDir, upperDir } = options;
  // The session a state was saved in, as the boot record names it: only a
  // booted session has one, and only its own earlier saves are superseded.
  const bootSession = options.bootRecord?.session ?? '';
  await checkDirs(upperDir, dataDir);
  // Only a clean boot the user picked, or a session that reset the stick or
  // restored a backup onto it, is one not to save; a default boot that found no state (the first boot
  // of a new stick) saves as usual.
  const why =
    options.bootRecord?.requested === 'clean'
      ? 'this session booted clean'
      : options.runDir
        ? sessionMarkReason(options.runDir)
        : undefined;
  if (why && options.checkpoint) {
    throw new NoCheckpointError(`${why}: no checkpoint`, { hint: 'run `cairn save` to save this session on purpose' });
  }
  if (why && !(await options.confirmCleanSave(why))) {
    throw new RefusedError(`${why}: nothing is saved unless you confirm`, {
      hint: 'run `cairn save --yes` to save this session as the newest state anyway',
    });
  }

  options.onPhase?.('locking');
  return withSaveLock(
    dataDir,
    { waitSeconds: config.lockWait, session: options.session, onWait: options.onWaitForLock },
    async (lock) => {
      const temp = join(dataDir, DATA.temp);
      const matcher = compileExcludes(config.excludes);
      const warnings: string[] = [];
      const phaseSeconds: SaveReport['phaseSeconds'] = {};
      let upperEstimate = 0;
      let upperSaved = 0;
      let statesBefore: StateFile[] = [];
      let from: StateFile | undefined;
      let imageBytes = 0;
      let files = 0;
      let plan: RotationPlan | undefined;
      let held: HeldState[] = [];
      /** Inodes of states whose checksum failed when read whole during this save. */
      let damaged = new Map<number, string>();
      /** intactFrom as it runs beside the squash: `from` and `damaged` are known once it settles. */
      let origin: Promise<void> = Promise.resolve();
      let space = 0;
      let links: StateFile[] = [];
      /** The state a delta extends, when this save writes one. */
      let parent: StateFile | undefined;
      let baselineSince = 0;
      let kind: SaveReport['kind'] = 'state';
      let chainLinks: number | undefined;
      let linksRemoved: string[] = [];
      let seal: Seal | undefined;
      /** Set once the first rotation step ran: from then on the temp image may be a state's. */
      let rotating = false;

      const squashWhole = async () => {
        // Made root's alone before a byte of the session is in it: mksquashfs keeps the mode of the file it overwrites.
        await writeFile(temp, '', { mode: MODES.state });
        await chmod(temp, MODES.state);
        await withTempDir('cairn-save-', async (tmp) => {
          await squash(
            {
              upperDir,
              output: temp,
              excludes: config.excludes,
              excludeFile: join(tmp, 'exclude'),
              config,
              upperBytes: upperEstimate,
              onProgress: (f) => options.onProgress?.('squashing', f),
              onWarning: options.onWarning,
            },
            () => freeBytes(dataDir),
          );
        });
        // Durable before it is read back: what verification reads is what the stick keeps.
        await fsyncFile(temp);
        imageBytes = (await stat(temp)).size;
      };

      /** The delta over PARENT, written, verified and sealed as the temp image (src/checkpoint/write.ts); false when nothing changed. */
      const writeCheckpoint = async (over: StateFile): Promise<boolean> => {
        const delta = await writeDelta({
          upperDir,
          parent: { links: linksOf(over) },
          contentsSinceMs: baselineSince,
          chain: chainIds(over),
          output: temp,
          session: bootSession,
          config,
        });
        if (!delta.written) return false;
        seal = delta.seal;
        imageBytes = delta.bytes;
        files = delta.entries;
        space = delta.seal!.space ?? 0;
        upperSaved = space;
        chainLinks = linksOf(over).length + 1;
        if (!delta.directIo) warnings.push('the data partition does not allow direct I/O: the delta was read back through the page cache');
        return true;
      };

      const steps: Step[] = [
        {
          name: 'remove what an interrupted save left, check free space',
          phase: 'preparing',
          run: async () => {
            await removeLeftovers(dataDir);
            // Only root reads the data partition's root (names.ts MODES).
            await chmod(dataDir, MODES.dataRoot);
            statesBefore = await listStates(dataDir);
            links = await listLinks(dataDir);
            held = await holdSkippedStates(dataDir, statesBefore, options.bootRecord);
            // Read whole while the squash runs (it reads RAM and writes, this reads
            // the device): only the rotation needs it, and a failure is thrown there.
            origin = intactFrom(
              statesBefore,
              options.bootRecord?.used === 'clean' ? undefined : options.bootRecord?.stateId,
              links,
            ).then((found) => {
              ({ from, damaged } = found);
            });
            origin.catch(() => undefined);
            if ((options.kind ?? 'full') === 'auto' && !why) {
              const choice = await chooseDeltaParent(options, [...statesBefore, ...links], config);
              parent = choice.parent;
              baselineSince = choice.since;
              if (!parent) log.info({ why: choice.why }, 'a whole state, not a checkpoint');
            }
            upperEstimate = await estimateUpperBytes(upperDir, matcher);
            // A delta needs room for what changed only; a whole state is checked against the upper layer.
            if (!parent) await checkFreeSpace(dataDir, upperEstimate);
          },
        },
        {
          name: 'squash the upper layer into the temp image and fsync it',
          phase: 'squashing',
          run: async () => {
            if (parent) {
              try {
                if (await writeCheckpoint(parent)) {
                  kind = 'delta';
                  return;
                }
                // Nothing changed since the state the upper layer equals: when that is the newest, there is nothing to save.
                if (parent.role === 'newest' && statesBefore.includes(parent)) {
                  kind = 'none';
                  return;
                }
              } catch (e) {
                if (!(e instanceof RefusedError)) throw e;
                warnings.push(`${e.message}: saved as a whole state`);
              }
            }
            await checkFreeSpace(dataDir, upperEstimate);
            await squashWhole();
          },
        },
        {
          name: 'read the image back from the device and compare it with the upper layer',
          phase: 'verifying',
          run: async () => {
            // A delta was read back and compared as it was written.
            if (kind !== 'state') return;
            const result = await verifyAgainstUpper(temp, imageBytes, upperDir, matcher, started, (f) =>
              options.onProgress?.('verifying', f),
            );
            files = result.files;
            sha256 = result.sha256;
            imageCksum = result.imageCksum;
            upperSaved = result.upperBytes;
            space = result.space;
            warnings.push(...result.leftOut);
            if (!result.directIo) {
              warnings.push('the data partition does not allow direct I/O: the image was read back through the page cache');
            }
          },
        },
        {
          name: 'seal the image with its checksum and fsync it',
          phase: 'sealing',
          run: async () => {
            if (kind === 'none') return;
            await origin;
            if (kind === 'state') seal = await sealWhole();
            plan = planRotation({
              states: markDamaged(await listStates(dataDir), damaged),
              fromId: from?.check.seal?.id,
              session: bootSession || undefined,
              generations: config.generations,
              held: new Set(held.map((h) => h.identity)),
              links: markDamaged(links, damaged),
            });
            const rotation: Step[] = plan.ops.map((op) => ({
              name: op.why,
              phase: 'rotating' as const,
              run: async () => {
                rotating = true;
                if (!lock.intact()) throw new IntegrityError(dataDir, 'the save lock was lost; stopping before rotation');
                log.info({ op }, 'rotate');
                await applyOp(dataDir, op);
              },
            }));
            if (kind === 'delta') {
              // Its links by id before any name holds it: a boot of the new newest finds them all.
              rotation.unshift({
                name: 'give the checkpoint and the links it extends their names under checkpoints/',
                phase: 'rotating',
                run: async () => {
                  rotating = true;
                  await linkChain(dataDir, parent!);
                  await linkDurably(temp, join(dataDir, checkpointLink(seal!.id)));
                },
              });
            }
            steps.push(...rotation);
          },
        },
      ];
      const sealWhole = async (): Promise<Seal> => {
            const seal = {
              size: imageBytes,
              sha256,
              id: randomUUID(),
              parent: from?.check.seal?.id ?? '',
              session: bootSession,
              created: Math.floor(Date.now() / 1000),
              files,
              space,
            };
            await appendDurably(temp, encodeSeal(seal, { imageCksum }));
            const back = await readSeal(temp);
            if (!back.ok || back.seal.sha256 !== sha256) {
              throw new IntegrityError(temp, `the seal did not read back: ${back.ok ? 'checksum differs' : back.problem}`);
            }
            return seal;
      };
      let sha256 = '';
      let imageCksum = 0;

      let stepsRun = 0;
      try {
        for (let i = 0; i < steps.length; i++) {
          if (options.stopAfterSteps !== undefined && stepsRun >= options.stopAfterSteps) {
            await origin.catch(() => undefined);
            return report(false);
          }
          const step = steps[i]!;
          const t = Date.now();
          options.onPhase?.(step.phase);
          log.debug({ step: step.name }, 'save step');
          await step.run();
          phaseSeconds[step.phase] = (phaseSeconds[step.phase] ?? 0) + (Date.now() - t) / 1000;
          stepsRun++;
        }
      } catch (e) {
        // The previous states are untouched until rotation, and rotation
        // never leaves them invalid; the temp image is only litter.
        await origin.catch(() => undefined);
        if (!rotating) await removeSaveFile(temp);
        throw e;
      }
      if ((kind as SaveReport['kind']) === 'none') {
        await origin.catch(() => undefined);
        options.onPhase?.('done');
        return report(true);
      }
      // The save is done; links a crash here leaves are the next save's to remove.
      linksRemoved = await collectLinks(dataDir, await listStates(dataDir)).catch((e: Error) => {
        warnings.push(`checkpoint links no state needs were not removed: ${e.message}`);
        return [];
      });
      // What `cairn diff` compares with from now on; the save is done whatever happens here.
      await recordSavedBaseline(options.runDir, join(dataDir, DATA.newest), started).catch((e: Error) =>
        warnings.push(`cairn diff was not told of this save, and compares with an older state: ${e.message}`),
      );
      options.onPhase?.('done');
      return report(true);

      function report(complete: boolean): SaveReport {
        return {
          image: join(dataDir, DATA.newest),
          kind,
          ...(chainLinks ? { chainLinks } : {}),
          linksRemoved,
          bytes: imageBytes,
          files,
          upperBytes: upperSaved,
          seconds: (Date.now() - started) / 1000,
          phaseSeconds,
          bootedFrom: from?.name,
          backup: complete ? (plan?.backup ? DATA.backup : undefined) : undefined,
          kept: plan?.kept.map((k) => ({ state: k.state.name, as: k.as })) ?? [],
          pruned: plan?.pruned.map((p) => p.name) ?? [],
          dropped: plan?.dropped.map((d) => ({ state: d.state.name, reason: d.reason })) ?? [],
          held: held.map((h) => ({ state: heldName(h, statesBefore), reason: h.reason })),
          warnings,
          maxRssKiB: process.resourceUsage().maxRSS,
          stepsRun,
          stepsTotal: steps.length,
        };
      }
    },
  );
}

/**
 * The seal's `space`. A sparse file kept without its holes (sparse.ts)
 * counts twice: at boot its packed data is unpacked before the file is
 * rebuilt from it.
 */
function spaceTaken(walk: Walk): number {
  let n = 0;
  for (const e of walk.entries.values()) n += e.allocated;
  for (const p of walk.packed) n += 2 * p.entry.allocated;
  return n;
}

function upperBytes(walk: Walk): number {
  let n = 0;
  for (const e of walk.entries.values()) n += e.type === 'file' ? Math.min(e.size, e.allocated) : 0;
  for (const p of walk.packed) n += p.entry.allocated;
  return n;
}

/**
 * The upper layer's size for the space check. On a running system the upper
 * layer is a file system of its own and statfs answers at once; for a plain
 * directory the tree is walked.
 */
async function estimateUpperBytes(upperDir: string, matcher: ExcludeMatcher): Promise<number> {
  const [here, parent] = await Promise.all([stat(upperDir), stat(join(upperDir, '..'))]);
  if (here.dev !== parent.dev) {
    const s = await statfs(upperDir);
    return (s.blocks - s.bfree) * s.bsize;
  }
  return upperBytes(walkTree(upperDir, matcher));
}

async function freeBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/**
 * Refuses before squashing only when even a 20:1 compression could not fit:
 * how well the data compresses is known only once mksquashfs has run, and
 * running out of space during it fails as cleanly.
 */
async function checkFreeSpace(dataDir: string, upper: number): Promise<void> {
  const free = await freeBytes(dataDir);
  if (free < (1 << 20) + upper / 20) {
    throw new NoSpaceError(dataDir, free, upper);
  }
}

async function checkDirs(upperDir: string, dataDir: string): Promise<void> {
  for (const [dir, what] of [
    [upperDir, 'upper layer'],
    [dataDir, 'data partition'],
  ] as const) {
    const st = await stat(dir).catch(() => undefined);
    if (!st) throw new PathError(dir, `the ${what} directory does not exist`);
    if (!st.isDirectory()) throw new PathError(dir, `the ${what} is not a directory`);
  }
  try {
    await access(dataDir, constants.W_OK);
  } catch {
    throw new PathError(dataDir, 'the data partition is not writable', 'mount it read-write, or run cairn as root');
  }
  const [u, d] = await Promise.all([realpath(upperDir), realpath(dataDir)]);
  if (d === u || d.startsWith(u + sep)) {
    throw new PathError(dataDir, `the data partition is inside the upper layer ${upperDir}: the save would squash itself`);
  }
}

/**
 * A save interrupted by a crash or a kill can leave its temp image, a second
 * name from rotation, and the verify mount with its loop device. None of them
 * is a state; all go before a new save starts.
 *
 * The save only ever makes regular files under its names. Anything else
 * there (a directory, a symbolic link, dangling or not) was put there by
 * someone else: it is neither removed nor written or renamed through, and
 * the save refuses to start, naming it, before it changes anything.
 */
async function removeLeftovers(dataDir: string): Promise<void> {
  for (const name of await readdir(dataDir)) {
    if (!isStateName(name) && name !== DATA.temp && name !== DATA.backupNext) continue;
    const path = join(dataDir, name);
    const problem = notAStateImage(await lstat(path));
    if (problem) throw new NameTakenError(path, problem);
  }
  const temp = join(dataDir, DATA.temp);
  if (await lstat(temp).catch(() => undefined)) {
    await removeLoopsOver(temp);
    log.info({ temp }, 'removing the temp image of an interrupted save');
  }
  await removeSaveFile(temp);
  await removeSaveFile(deltaTemp(temp));
  await removeSaveFile(join(dataDir, DATA.backupNext));
}

/**
 * Unmounts and detaches the loop devices over FILE, and those over them:
 * the verification mounts the image on a loop device over another
 * (verifyAgainstUpper).
 */
async function removeLoopsOver(file: string): Promise<void> {
  const { stdout } = await run('losetup', ['--associated', file, '--noheadings', '--output', 'NAME'], {
    timeoutMs: 30_000,
  }).catch(() => ({ stdout: '' }));
  for (const device of stdout.split('\n').map((l) => l.trim()).filter(Boolean)) {
    await removeLoopsOver(device);
    for (const target of mountsOf(device)) {
      await unmount(target);
      await removeEmptyDir(target);
    }
    await detachLoop(device);
  }
}

/** Removes a file the save made; leaves alone whatever else holds its name. */
async function removeSaveFile(path: string): Promise<void> {
  const st = await lstat(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  if (st?.isFile()) await unlink(path);
}

interface VerifyResult {
  sha256: string;
  /** What cksum prints for the image as read back: the seal's cksum_fix is made from it. */
  imageCksum: number;
  files: number;
  /** File bytes in the upper layer as saved (excludes applied, holes not counted). */
  upperBytes: number;
  /** Bytes the saved entries take in the upper layer by their blocks: the seal's `space`. */
  space: number;
  directIo: boolean;
  /** What no state can hold, left out by the squash too, in words for the user. */
  leftOut: string[];
}

/**
 * DESIGN step 4. The image is read through a loop device that reads its file
 * with O_DIRECT: the checksums and the mounted tree both come from what is
 * on the device, not from the page cache mksquashfs wrote through.
 *
 * It comes off the data partition once. squashfs reads its blocks with bios
 * of its own, past a device's page cache, so mounted on that loop device it
 * would read the image a second time beside the checksum pass. It is
 * mounted instead on loop devices over the first, which read the first
 * through its page cache: the checksum pass, the `cksum` and the mounts
 * share one read, whichever of them comes to a block first.
 */
async function verifyAgainstUpper(
  image: string,
  size: number,
  upperDir: string,
  matcher: ReturnType<typeof compileExcludes>,
  since: number,
  onProgress: (fraction: number) => void,
): Promise<VerifyResult> {
  // The views are made first: they hold the device open, so its page cache
  // lasts until the end (the last close of a block device drops it).
  return withLoopDevice(image, { readOnly: true, directIo: true }, (device) =>
    withMountedViews(device, Math.min(2, availableParallelism()), async ([mnt, ...more]) => {
      const directIo = loopUsesDirectIo(device);
      // The checksum pass and the comparison run side by side: one is hashing,
      // the others decompressing.
      const t = Date.now();
      const checksum = sha256InWorker(device, size).then((sum) => {
        log.debug({ ms: Date.now() - t, bytes: size }, 'checksum read back');
        return sum;
      });
      const imageCksum = cksumTool(device, size, image);
      const compared = (async () => {
        // Walked now, not before squashing: excluded paths that appeared
        // meanwhile were left out by mksquashfs too.
        const upper = walkTree(upperDir, matcher, { forSave: true });
        const total = Math.max(1, upperBytes(upper));
        const result = await compareTrees({
          upper,
          upperRoot: upperDir,
          imageRoot: mnt!,
          moreImageRoots: more,
          since,
          onProgress: (done) => onProgress(Math.min(1, done / total)),
        });
        if (result.differences.length) throw new VerifyMismatchError(image, result.differences, 'save');
        return { files: result.entries, upperBytes: upperBytes(upper), space: spaceTaken(upper), leftOut: describeLeftOut(upper.leftOut) };
      })();
      const [sha256, cksum, tree] = await Promise.all([checksum, imageCksum, compared]);
      return { sha256, imageCksum: cksum, ...tree, directIo };
    }),
  );
}

/**
 * N read-only mounts of the squashfs on DEVICE, each on a loop device of its
 * own over it that reads DEVICE through its page cache: N superblocks, so N
 * decompressors on a kernel with one per mount, and still one read of the
 * device.
 */
async function withMountedViews<T>(device: string, n: number, fn: (roots: string[]) => Promise<T>, roots: string[] = []): Promise<T> {
  if (roots.length >= n) return fn(roots);
  return withLoopDevice(device, { readOnly: true }, (view) =>
    withTempDir('cairn-verify-', (mnt) =>
      withMount(view, mnt, { type: 'squashfs', options: ['ro'] }, () => withMountedViews(device, n, fn, [...roots, mnt])),
    ),
  );
}

/**
 * The state a checkpoint delta extends: the one this session's upper layer
 * was unpacked from at boot, or saved as since (changes/baseline.ts), when
 * its chain is whole, shorter than chain_max deltas, and its deltas weigh
 * at most chain_ratio of its base. Otherwise a whole state is written, and
 * WHY says so.
 */
async function chooseDeltaParent(
  options: Pick<SaveOptions, 'runDir' | 'bootRecord'>,
  candidates: readonly StateFile[],
  config: Pick<Config, 'chainMax' | 'chainRatio'>,
): Promise<{ parent?: StateFile; since: number; why: string }> {
  if (!options.bootRecord) return { since: 0, why: 'no boot record: what changed since a state is not known' };
  const baseline = resolveBaseline(options.runDir, options.bootRecord, undefined);
  if (!baseline.stateId || baseline.contentsSinceMs <= 0) return { since: 0, why: `no state ${baseline.label} is known to equal` };
  const parent = candidates.find((s) => s.check.ok && s.check.seal.id === baseline.stateId);
  if (!parent) return { since: 0, why: `the state of ${baseline.label} is not on the data partition` };
  const files = linksOf(parent);
  if (parent.chain && parent.chain.present < files.length) return { since: 0, why: 'a link of its checkpoint chain is missing' };
  if (files.length - 1 >= config.chainMax) return { since: 0, why: `its chain has ${files.length - 1} checkpoints (chain_max ${config.chainMax})` };
  const sizes = await Promise.all(files.map(async (f) => (await stat(f)).size));
  const deltas = sizes.slice(1).reduce((a, b) => a + b, 0);
  if (deltas > config.chainRatio * sizes[0]!) return { since: 0, why: `its checkpoints weigh more than chain_ratio ${config.chainRatio} of its base` };
  return { parent, since: baseline.contentsSinceMs, why: '' };
}
