/**
 * .PKGINFO: `key = value` lines, `#` comments, keys that may repeat (depend,
 * provides, replaces, install_if, triggers...). Split on the first " = " as
 * apk-tools 2.14 does (src/package.c read_info_line, apk_blob_split on " = ").
 * abuild writes it (abuild.in prepare_metafiles) and appends
 * `datahash = <sha256 of data.tar.gz>` last (create_apks).
 */

export interface PkgInfoField {
  key: string;
  value: string;
}

export interface PkgInfo {
  /** Every field, in file order; repeated keys stay repeated. */
  fields: PkgInfoField[];
  pkgname: string;
  pkgver: string;
  arch?: string;
  /** Installed size in bytes; apk 2 treats 0 as a virtual package and extracts nothing. */
  size?: number;
  origin?: string;
  builddate?: number;
  depends: string[];
  provides: string[];
  replaces: string[];
  installIf: string[];
  /** Directory globs from every `triggers =` line (a line holds several, space-separated). */
  triggers: string[];
  /** Lower-case hex sha256 of the data member, when the package has one. */
  datahash?: string;
}

export function parsePkgInfo(text: string): PkgInfo {
  const fields: PkgInfoField[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.indexOf(' = ');
    if (at < 0) continue; // apk skips such lines too
    fields.push({ key: line.slice(0, at), value: line.slice(at + 3) });
  }
  const first = (key: string) => fields.find((f) => f.key === key)?.value;
  const all = (key: string) => fields.filter((f) => f.key === key).map((f) => f.value);
  const words = (key: string) => all(key).flatMap((v) => v.split(/\s+/).filter(Boolean));
  const number = (key: string) => {
    const v = first(key);
    return v !== undefined && /^[0-9]+$/.test(v) ? Number(v) : undefined;
  };
  const datahash = first('datahash');
  return {
    fields,
    pkgname: first('pkgname') ?? '',
    pkgver: first('pkgver') ?? '',
    arch: first('arch'),
    size: number('size'),
    origin: first('origin'),
    builddate: number('builddate'),
    depends: words('depend'),
    provides: words('provides'),
    replaces: words('replaces'),
    installIf: words('install_if'),
    triggers: words('triggers'),
    datahash: datahash?.toLowerCase(),
  };
}

/** Writes fields back as abuild does: one `key = value` line each. */
export function formatPkgInfo(fields: readonly PkgInfoField[]): string {
  return fields.map((f) => `${checkKey(f.key)} = ${checkValue(f.value)}\n`).join('');
}

/**
 * Replaces every line of `key` with one `key = value` line (at the place of
 * the first, or at the end), leaving every other line, comments included, as
 * it was. `value` undefined removes the key.
 */
export function setPkgInfoField(text: string, key: string, value: string | undefined): string {
  checkKey(key);
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  const out: string[] = [];
  let placed = false;
  for (const line of lines) {
    if (line.startsWith(`${key} = `)) {
      if (!placed && value !== undefined) out.push(`${key} = ${checkValue(value)}`);
      placed = true;
      continue;
    }
    out.push(line);
  }
  if (!placed && value !== undefined) out.push(`${key} = ${checkValue(value)}`);
  return out.length ? `${out.join('\n')}\n` : '';
}

/** Sets the datahash the way abuild's create_apks does: the line goes last. */
export function withDatahash(text: string, sha256hex: string): string {
  return `${setPkgInfoField(text, 'datahash', undefined)}datahash = ${sha256hex}\n`;
}

function checkKey(key: string): string {
  if (!/^[a-z_][a-z0-9_]*$/.test(key)) throw new Error(`bad .PKGINFO key "${key}"`);
  return key;
}

function checkValue(value: string): string {
  if (/[\n\r]/.test(value)) throw new Error(`a .PKGINFO value cannot hold a line break: "${value}"`);
  return value;
}
