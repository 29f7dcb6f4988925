/**
 * The kernel modules an initramfs carries: the ones the boot needs, with
 * their dependencies from the kernel's own modules.dep (made by depmod), and
 * the index files that let modprobe in the initramfs find them by name and
 * by alias (coldplug loads hardware drivers by their modalias, and the
 * kernel asks for crypto-xts, fs-squashfs and the like by alias).
 */
import { existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ModuleMissingError, ModulesTreeMissingError } from '../lib/errors.js';

/** A module's name as modprobe compares it: file name without .ko(.xz ...), "-" as "_". */
export function moduleName(pathOrName: string): string {
  const base = pathOrName.slice(pathOrName.lastIndexOf('/') + 1);
  return base.replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');
}

export interface ModuleIndex {
  kernelVersion: string;
  /** The directory lib/modules/<kver> on the build host. */
  tree: string;
  /** Module name -> its path relative to the tree and those of its dependencies. */
  dep: Map<string, { path: string; deps: string[] }>;
  builtin: Set<string>;
  /** modules.alias lines as [pattern, module name]. */
  aliases: [string, string][];
  /** Module name -> modules its softdeps name (by name or alias). */
  softdeps: Map<string, string[]>;
}

/** modules.dep: "kernel/a/b.ko: kernel/c.ko kernel/d.ko" per line. */
export function parseModulesDep(text: string): Map<string, { path: string; deps: string[] }> {
  const out = new Map<string, { path: string; deps: string[] }>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0 || line.startsWith('#')) continue;
    const path = line.slice(0, colon).trim();
    const deps = line.slice(colon + 1).trim().split(/\s+/).filter(Boolean);
    out.set(moduleName(path), { path, deps });
  }
  return out;
}

export function parseModulesAlias(text: string): [string, string][] {
  const out: [string, string][] = [];
  for (const line of text.split('\n')) {
    const m = /^alias\s+(\S+)\s+(\S+)\s*$/.exec(line);
    if (m) out.push([m[1]!, moduleName(m[2]!)]);
  }
  return out;
}

/** modules.softdep: "softdep MOD pre: A B post: C" (the words pre:/post: may be absent). */
export function parseModulesSoftdep(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const words = line.trim().split(/\s+/);
    if (words[0] !== 'softdep' || !words[1]) continue;
    const name = moduleName(words[1]);
    const more = words.slice(2).filter((w) => w !== 'pre:' && w !== 'post:');
    out.set(name, [...(out.get(name) ?? []), ...more]);
  }
  return out;
}

/** Where lib/modules/<kver> is under ROOT (usr/lib/modules on merged-/usr trees). */
export function findModulesTree(root: string, kernelVersion: string): string {
  for (const rel of ['lib/modules', 'usr/lib/modules']) {
    const tree = join(root, rel, kernelVersion);
    if (existsSync(tree) && statSync(tree).isDirectory()) return tree;
  }
  throw new ModulesTreeMissingError(root, kernelVersion);
}

/** Reads the index files of a depmod'd modules tree. */
export async function readModuleIndex(root: string, kernelVersion: string): Promise<ModuleIndex> {
  const tree = findModulesTree(root, kernelVersion);
  const read = async (name: string, required: boolean) => {
    const path = join(tree, name);
    if (!existsSync(path)) {
      if (required) throw new ModulesTreeMissingError(root, kernelVersion, `${name} is missing: the tree was never indexed by depmod`);
      return '';
    }
    return readFile(path, 'utf8');
  };
  const [dep, alias, builtin, softdep] = await Promise.all([
    read('modules.dep', true),
    read('modules.alias', true),
    read('modules.builtin', false),
    read('modules.softdep', false),
  ]);
  return {
    kernelVersion,
    tree,
    dep: parseModulesDep(dep),
    builtin: new Set(builtin.split('\n').filter(Boolean).map(moduleName)),
    aliases: parseModulesAlias(alias),
    softdeps: parseModulesSoftdep(softdep),
  };
}

export interface ModuleSelection {
  /** Module files to carry, relative to the tree, sorted. */
  paths: string[];
  /** Their names. */
  names: Set<string>;
  /** Wanted modules the kernel has built in: nothing to carry. */
  builtin: string[];
  /** Optional modules this kernel has neither as a module nor built in. */
  absent: string[];
}

/**
 * The modules to carry for `required` and `optional` (names as modprobe takes
 * them), with everything modules.dep says they need and, where present,
 * their soft dependencies. A required module that is neither a module nor
 * built in is an error naming it.
 */
export function selectModules(index: ModuleIndex, wanted: { required: readonly string[]; optional: readonly string[] }): ModuleSelection {
  const names = new Set<string>();
  const paths = new Set<string>();
  const builtin: string[] = [];
  const absent: string[] = [];
  const byPath = new Map([...index.dep.values()].map((m) => [m.path, m]));
  const add = (name: string) => {
    const m = index.dep.get(name);
    if (!m || names.has(name)) return;
    names.add(name);
    paths.add(m.path);
    for (const d of m.deps) {
      if (!byPath.has(d)) throw new ModuleMissingError(moduleName(d), index.kernelVersion, `needed by ${name} but not in modules.dep`);
      add(moduleName(d));
    }
  };
  const want = (raw: string, required: boolean) => {
    const name = moduleName(raw);
    if (index.dep.has(name)) add(name);
    else if (index.builtin.has(name)) builtin.push(name);
    else if (required) throw new ModuleMissingError(name, index.kernelVersion);
    else absent.push(name);
  };
  for (const m of wanted.required) want(m, true);
  for (const m of wanted.optional) want(m, false);
  // Soft dependencies name a module or an alias; carry what this kernel has.
  const aliasTargets = new Map<string, string[]>();
  for (const [pattern, mod] of index.aliases) aliasTargets.set(pattern, [...(aliasTargets.get(pattern) ?? []), mod]);
  let before = -1;
  while (before !== names.size) {
    before = names.size;
    for (const name of [...names]) {
      for (const soft of index.softdeps.get(name) ?? []) {
        for (const target of [moduleName(soft), ...(aliasTargets.get(soft) ?? [])]) add(target);
      }
    }
  }
  return { paths: [...paths].sort(), names, builtin: [...new Set(builtin)].sort(), absent: [...new Set(absent)].sort() };
}

/**
 * The index files for the initramfs's tree: modules.dep, modules.alias,
 * modules.softdep and modules.order cut down to the modules it carries
 * (exactly what depmod would make for that subset, since every dependency
 * is carried too), and modules.builtin as it is, so modprobe knows what
 * needs no file.
 */
export async function moduleIndexFiles(index: ModuleIndex, selection: ModuleSelection): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  const keep = (name: string) => selection.names.has(name);
  const lines = (text: string, pick: (line: string) => boolean) => {
    const kept = text.split('\n').filter((l) => l !== '' && pick(l));
    return Buffer.from(kept.length ? `${kept.join('\n')}\n` : '');
  };
  const read = async (name: string) => (existsSync(join(index.tree, name)) ? readFile(join(index.tree, name), 'utf8') : undefined);
  const dep = (await read('modules.dep'))!;
  files.set('modules.dep', lines(dep, (l) => l.includes(':') && keep(moduleName(l.slice(0, l.indexOf(':'))))));
  const alias = (await read('modules.alias'))!;
  files.set('modules.alias', lines(alias, (l) => { const m = /^alias\s+\S+\s+(\S+)/.exec(l); return m !== null && keep(moduleName(m[1]!)); }));
  const softdep = await read('modules.softdep');
  if (softdep !== undefined) files.set('modules.softdep', lines(softdep, (l) => { const w = l.trim().split(/\s+/); return w[0] === 'softdep' && keep(moduleName(w[1] ?? '')); }));
  const order = await read('modules.order');
  if (order !== undefined) files.set('modules.order', lines(order, (l) => keep(moduleName(l.trim()))));
  for (const name of ['modules.builtin', 'modules.builtin.modinfo']) {
    const path = join(index.tree, name);
    if (existsSync(path)) files.set(name, await readFile(path));
  }
  return files;
}
