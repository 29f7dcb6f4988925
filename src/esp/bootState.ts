import { CairnError } from '../lib/errors.js';
import { ESP_PATHS } from '../names.js';
import { buildMenu, checkSettings, type BootSettings, type KernelFiles, type Menu } from '../grub/menu.js';
import { renderGrubConfig } from '../grub/render.js';
import { listStates } from '../state/states.js';
import type { GrubPlatform } from '../grub/core.js';
import type { Esp } from './esp.js';

/**
 * What the ESP boots, recorded beside the menu so that a running cairn can
 * rebuild grub.cfg without the image builder's options: the kernels, the
 * boot settings and whether the initramfs must unlock LUKS. grub.cfg is
 * always made from this record and the states on the data partition.
 */
export interface BootState {
  format: typeof BOOT_STATE_FORMAT;
  settings: Omit<BootSettings, 'kernel' | 'initrd'>;
  timeoutSeconds: number;
  luks: boolean;
  /** The kernel every state entry boots. */
  kernel: KernelFiles;
  /** The kernel that booted before an update, kept until `kernel` has booted once. */
  previousKernel?: KernelFiles;
  /** The GRUB version of each platform's boot files, as `cairn grub update` last wrote them. */
  grub?: Partial<Record<GrubPlatform, string>>;
}

export const BOOT_STATE_FORMAT = 'cairn-boot 1';

export { ESP_PATHS };

/** The files a kernel release has on the ESP, as the menu names them. */
export function kernelFiles(release: string): KernelFiles {
  return { release, kernel: `/${ESP_PATHS.kernel(release)}`, initrd: `/${ESP_PATHS.initrd(release)}` };
}

export function parseBootState(text: string, source: string): BootState {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new CairnError(`${source} is not JSON: ${(e as Error).message}`);
  }
  const s = v as Partial<BootState>;
  if (s?.format !== BOOT_STATE_FORMAT) throw new CairnError(`${source} is not a cairn boot record ("${BOOT_STATE_FORMAT}")`);
  const isKernel = (k: unknown): k is KernelFiles =>
    typeof k === 'object' && k !== null && ['release', 'kernel', 'initrd'].every((f) => typeof (k as Record<string, unknown>)[f] === 'string');
  if (!isKernel(s.kernel) || (s.previousKernel !== undefined && !isKernel(s.previousKernel))) {
    throw new CairnError(`${source} names its kernels wrongly`);
  }
  if (typeof s.settings !== 'object' || typeof s.timeoutSeconds !== 'number' || typeof s.luks !== 'boolean') {
    throw new CairnError(`${source} lacks the boot settings`);
  }
  if (s.grub !== undefined && (typeof s.grub !== 'object' || s.grub === null || Object.values(s.grub).some((v) => typeof v !== 'string'))) {
    throw new CairnError(`${source} names its GRUB versions wrongly`);
  }
  checkSettings({ ...(s.settings as BootState['settings']), kernel: s.kernel.kernel, initrd: s.kernel.initrd });
  return s as BootState;
}

export function formatBootState(s: BootState): string {
  return `${JSON.stringify(s, null, 2)}\n`;
}

/** The menu for a boot record and the states on a data partition. */
export async function menuFor(state: BootState, dataDir: string): Promise<Menu> {
  const states = await listStates(dataDir);
  return buildMenu(states, { ...state.settings, kernel: state.kernel.kernel, initrd: state.kernel.initrd }, {
    timeoutSeconds: state.timeoutSeconds,
    previousKernel: state.previousKernel,
  });
}

export async function readBootState(esp: Esp): Promise<BootState> {
  const bytes = await esp.read(ESP_PATHS.bootState);
  if (!bytes) {
    throw new CairnError(`the ESP (${esp.device}) has no /${ESP_PATHS.bootState}`, {
      hint: 'it was not made by cairn image build, or by an older cairn: rebuild the stick',
    });
  }
  return parseBootState(bytes.toString('utf8'), `/${ESP_PATHS.bootState}`);
}

/** Rewrites the menu from the record, after the states changed. */
export async function writeMenu(esp: Esp, dataDir: string): Promise<Menu> {
  const menu = await menuFor(await readBootState(esp), dataDir);
  const text = renderGrubConfig(menu);
  // Checkpoints refresh the menu every few minutes: the ESP is written only when the menu changed.
  const now = await esp.read(ESP_PATHS.menu).catch(() => undefined);
  if (now?.toString() !== text) await esp.install(ESP_PATHS.menu, { data: text });
  return menu;
}

/**
 * Writes the record, then the menu made from it: each one whole or not at
 * all. A power cut between the two leaves the old menu, which boots what it
 * booted before; the next write of the menu catches up.
 */
export async function writeBootState(esp: Esp, dataDir: string, state: BootState): Promise<Menu> {
  const menu = await menuFor(state, dataDir);
  await esp.install(ESP_PATHS.bootState, { data: formatBootState(state) });
  await esp.install(ESP_PATHS.menu, { data: renderGrubConfig(menu) });
  return menu;
}
