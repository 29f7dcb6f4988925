import { describe, it, expect } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DATA, LABELS, MODES, RUNTIME, SEAL, STATE, modulesImage } from '../../src/names.js';

const NAMES_SH = fileURLToPath(new URL('../../initramfs/lib/names.sh', import.meta.url));

/**
 * Each CAIRN_* variable of initramfs/lib/names.sh and its counterpart in
 * src/names.ts. A variable added to names.sh must be added here, with the
 * name it mirrors, or the test fails.
 */
/** modulesImage(kver) split around the kernel version: what names.sh spells as prefix and suffix. */
const [MODULES_PREFIX, MODULES_SUFFIX] = modulesImage('\0').split('\0') as [string, string];

const COUNTERPARTS: Record<string, string | number> = {
  CAIRN_ROOTFS: DATA.rootfs,
  CAIRN_FIRMWARE: DATA.firmware,
  CAIRN_NEWEST: DATA.newest,
  CAIRN_BACKUP: DATA.backup,
  CAIRN_GENERATION_PREFIX: DATA.generationPrefix,
  CAIRN_STATE_SUFFIX: DATA.stateSuffix,
  CAIRN_CHECKPOINTS: DATA.checkpoints,
  CAIRN_TEMP: DATA.temp,
  CAIRN_BACKUP_NEXT: DATA.backupNext,
  CAIRN_SAVE_LOCK: DATA.saveLock,
  CAIRN_SAVE_LOCK_OWNER: DATA.saveLockOwner,
  CAIRN_SAVE_FAILED: DATA.saveFailed,
  CAIRN_USER_DIR: DATA.userDir,
  CAIRN_SWAPFILE: DATA.swapfile,

  CAIRN_DATA_ROOT_MODE: MODES.dataRoot.toString(8),
  CAIRN_STATE_MODE: MODES.state.toString(8),

  CAIRN_LABEL_DATA: LABELS.data,
  CAIRN_LABEL_ESP: LABELS.esp,

  CAIRN_RUN_DIR: RUNTIME.runDir,
  CAIRN_BOOT_RECORD: RUNTIME.bootRecord,
  CAIRN_UPPER_MOUNT: RUNTIME.upperMount,
  CAIRN_UPPER_DIR: RUNTIME.upperDir,
  CAIRN_WORK_DIR: RUNTIME.workDir,
  CAIRN_LOWER_DIR: RUNTIME.lowerDir,
  CAIRN_DATA_DIR: RUNTIME.dataDir,

  CAIRN_SEAL_SIZE: SEAL.size,
  CAIRN_SEAL_MAGIC: SEAL.magic,
  CAIRN_DELTA_MAGIC: SEAL.deltaMagic,
  CAIRN_SEAL_CKSUM: SEAL.cksum,
  CAIRN_ACL_DUMP: STATE.aclDump,
  CAIRN_SPARSE_DIR: STATE.sparseDir,

  CAIRN_MODULES_PREFIX: MODULES_PREFIX,
  CAIRN_MODULES_SUFFIX: MODULES_SUFFIX,
};

/** `VAR=value`, `VAR='value'` or `VAR="value"` (optionally exported), read at test time. */
function readNamesSh(): { vars: Map<string, string>; unparsed: string[] } {
  const vars = new Map<string, string>();
  const unparsed: string[] = [];
  for (const raw of readFileSync(NAMES_SH, 'utf8').split('\n')) {
    const line = raw.trim();
    if (!/^(export\s+|readonly\s+)?CAIRN_/.test(line)) continue;
    const m = /^(?:export\s+|readonly\s+)?(CAIRN_[A-Z0-9_]+)=(?:'([^']*)'|"([^"$`\\]*)"|([^\s'"$`\\#;]*))\s*(?:#.*)?$/.exec(line);
    if (!m) {
      unparsed.push(line);
      continue;
    }
    vars.set(m[1]!, m[2] ?? m[3] ?? m[4] ?? '');
  }
  return { vars, unparsed };
}

describe('initramfs/lib/names.sh agrees with src/names.ts', () => {
  it('every CAIRN_* line is a plain assignment this test can read', () => {
    const { vars, unparsed } = readNamesSh();
    expect(unparsed, 'lines of names.sh that are not VAR=value').toEqual([]);
    expect(vars.size).toBeGreaterThan(0);
  });

  it('every variable has a counterpart in src/names.ts', () => {
    const { vars } = readNamesSh();
    const unmapped = [...vars.keys()].filter((v) => !(v in COUNTERPARTS));
    expect(unmapped, 'names.sh variables without a counterpart in src/names.ts (add one there and map it here)').toEqual([]);
  });

  it('every variable has the same value as its counterpart', () => {
    const { vars } = readNamesSh();
    const differ = [...vars]
      .filter(([v]) => v in COUNTERPARTS)
      .filter(([v, value]) => value !== String(COUNTERPARTS[v]))
      .map(([v, value]) => `${v}=${value} but src/names.ts has ${String(COUNTERPARTS[v])}`);
    expect(differ).toEqual([]);
  });

  it('the modules image name splits into exactly one prefix and suffix', () => {
    expect(modulesImage('\0').split('\0')).toHaveLength(2);
    expect(`${MODULES_PREFIX}6.6.8-0-lts${MODULES_SUFFIX}`).toBe(modulesImage('6.6.8-0-lts'));
  });

  it('every mapped variable is still defined in names.sh', () => {
    const { vars } = readNamesSh();
    expect(Object.keys(COUNTERPARTS).filter((v) => !vars.has(v))).toEqual([]);
  });

  it('a busybox shell that sources names.sh sees the same values', () => {
    expect(existsSync('/usr/bin/busybox'), '/usr/bin/busybox is missing').toBe(true);
    const { vars } = readNamesSh();
    const names = [...vars.keys()];
    const out = execFileSync(
      '/usr/bin/busybox',
      ['sh', '-c', `. "$1"; shift; for v in "$@"; do eval "printf '%s=%s\\n' \\"\\$v\\" \\"\\$$v\\""; done`, 'sh', NAMES_SH, ...names],
      { encoding: 'utf8', env: { PATH: '/nonexistent' } },
    );
    expect(out.split('\n').filter(Boolean)).toEqual(names.map((v) => `${v}=${vars.get(v)}`));
  });
});
