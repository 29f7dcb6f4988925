/**
 * An apk command line as apk-tools 2.14 reads it (src/apk.c), so the wrapper
 * and the real apk always agree on the applet, the packages and the options:
 *
 * - the applet is the first argument that does not start with '-' and is an
 *   applet's name (deduce_applet), even when it is some option's value;
 * - options are read by musl's getopt_long over the applet's option groups
 *   (global, commit, the applet's own): arguments are permuted, `--` ends the
 *   options, long names may be cut to any unique prefix, `--name=value` and
 *   `-Xvalue` work, short options cluster (`-qUX repo`);
 * - an unknown option is reported and skipped, and apk only stops with its
 *   usage text when the *last* option it read was unknown (parse_options
 *   keeps the result of the last one); `--help` and `--version` stop it too;
 * - the positional arguments lose the applet's name when it comes first.
 */

export const APK_APPLETS = [
  'add', 'audit', 'cache', 'del', 'dot', 'fetch', 'fix', 'index', 'info', 'list', 'manifest',
  'policy', 'search', 'stats', 'update', 'upgrade', 'verify', 'version',
] as const;

export type ApkApplet = (typeof APK_APPLETS)[number];

/** The applets whose transactions can bring special packages (they take the commit options). */
export const INSTALLING_APPLETS: readonly ApkApplet[] = ['add', 'upgrade', 'fix'];

interface OptionSpec {
  long: string;
  short?: string;
  arg?: boolean;
}

/** apk.c GLOBAL_OPTIONS. */
const GLOBAL: readonly OptionSpec[] = [
  { long: 'allow-untrusted' },
  { long: 'arch', arg: true },
  { long: 'cache-dir', arg: true },
  { long: 'cache-max-age', arg: true },
  { long: 'force', short: 'f' },
  { long: 'force-binary-stdout' },
  { long: 'force-broken-world' },
  { long: 'force-missing-repositories' },
  { long: 'force-non-repository' },
  { long: 'force-old-apk' },
  { long: 'force-overwrite' },
  { long: 'force-refresh' },
  { long: 'help', short: 'h' },
  { long: 'interactive', short: 'i' },
  { long: 'keys-dir', arg: true },
  { long: 'no-cache' },
  { long: 'no-check-certificate' },
  { long: 'no-interactive' },
  { long: 'no-network' },
  { long: 'no-progress' },
  { long: 'print-arch' },
  { long: 'progress' },
  { long: 'progress-fd', arg: true },
  { long: 'purge' },
  { long: 'quiet', short: 'q' },
  { long: 'repositories-file', arg: true },
  { long: 'repository', short: 'X', arg: true },
  { long: 'root', short: 'p', arg: true },
  { long: 'timeout', arg: true },
  { long: 'update-cache', short: 'U' },
  { long: 'verbose', short: 'v' },
  { long: 'version', short: 'V' },
  { long: 'wait', arg: true },
];

/** apk.c COMMIT_OPTIONS. */
const COMMIT: readonly OptionSpec[] = [
  { long: 'clean-protected' },
  { long: 'initramfs-diskless-boot' },
  { long: 'no-commit-hooks' },
  { long: 'no-scripts' },
  { long: 'overlay-from-stdin' },
  { long: 'simulate', short: 's' },
];

/** app_add.c, app_upgrade.c, app_fix.c. */
const APPLET_OPTIONS: Partial<Record<ApkApplet, readonly OptionSpec[]>> = {
  add: [
    { long: 'initdb' },
    { long: 'latest', short: 'l' },
    { long: 'no-chown' },
    { long: 'upgrade', short: 'u' },
    { long: 'virtual', short: 't', arg: true },
  ],
  upgrade: [
    { long: 'available', short: 'a' },
    { long: 'ignore' },
    { long: 'latest', short: 'l' },
    { long: 'no-self-upgrade' },
    { long: 'prune' },
    { long: 'self-upgrade-only' },
  ],
  fix: [
    { long: 'depends', short: 'd' },
    { long: 'directory-permissions' },
    { long: 'reinstall', short: 'r' },
    { long: 'upgrade', short: 'u' },
    { long: 'xattr', short: 'x' },
  ],
};

export interface ApkOption {
  /** The long name, whatever form it was given in. */
  name: string;
  value?: string;
}

export interface ParsedApkArgs {
  argv: readonly string[];
  applet?: ApkApplet;
  /** Options as apk reads them, in order; only for applets whose options are modelled (add, upgrade, fix). */
  options: ApkOption[];
  /** Package names and other operands, the applet's name taken off. */
  positionals: string[];
  /** Index in argv of the `--` that ends the options, if any. */
  terminator?: number;
  /**
   * apk stops before doing anything: help, version, print-arch, an unknown
   * last option, a missing option value. Such a command installs nothing.
   */
  stopsEarly: boolean;
  /** Whether the options were read with the applet's full option table. */
  modelled: boolean;
}

export function deduceApplet(argv: readonly string[]): ApkApplet | undefined {
  for (const a of argv) {
    if (a.startsWith('-')) continue;
    if ((APK_APPLETS as readonly string[]).includes(a)) return a as ApkApplet;
  }
  return undefined;
}

/** Reads an apk argument list (without argv[0]). */
export function parseApkArgs(argv: readonly string[]): ParsedApkArgs {
  const applet = deduceApplet(argv);
  const modelled = applet !== undefined && APPLET_OPTIONS[applet] !== undefined;
  // Unmodelled applets are read with the global options only: enough to
  // find their operands, and they never reach a transaction.
  const specs = [...GLOBAL, ...(modelled ? [...COMMIT, ...APPLET_OPTIONS[applet!]!] : [])];
  const options: ApkOption[] = [];
  const positionals: string[] = [];
  let terminator: number | undefined;
  let last: 'ok' | 'unknown' = 'ok';
  let stops = false;

  const accept = (spec: OptionSpec, value?: string) => {
    options.push(value === undefined ? { name: spec.long } : { name: spec.long, value });
    last = 'ok';
    if (spec.long === 'help' || spec.long === 'version' || spec.long === 'print-arch') stops = true;
  };

  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      terminator = i;
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith('-') || a === '-') {
      positionals.push(a);
      continue;
    }
    if (a.startsWith('--')) {
      const body = a.slice(2);
      const eq = body.indexOf('=');
      const name = eq < 0 ? body : body.slice(0, eq);
      const spec = findLong(specs, name);
      if (!spec) {
        last = 'unknown';
        continue;
      }
      if (spec.arg) {
        if (eq >= 0) accept(spec, body.slice(eq + 1));
        else if (i + 1 < argv.length) accept(spec, argv[++i]!);
        else last = 'unknown'; // musl: "option requires an argument"
      } else if (eq >= 0) {
        last = 'unknown'; // musl: "option does not take an argument"
      } else {
        accept(spec);
      }
      continue;
    }
    // A cluster of short options.
    for (let j = 1; j < a.length; j++) {
      const spec = specs.find((s) => s.short === a[j]);
      if (!spec) {
        last = 'unknown';
        continue;
      }
      if (!spec.arg) {
        accept(spec);
        continue;
      }
      if (j + 1 < a.length) accept(spec, a.slice(j + 1));
      else if (i + 1 < argv.length) accept(spec, argv[++i]!);
      else last = 'unknown';
      break;
    }
  }
  if (applet && positionals[0] === applet) positionals.shift();
  return {
    argv,
    applet,
    options,
    positionals,
    terminator,
    stopsEarly: stops || last === 'unknown' || applet === undefined,
    modelled,
  };
}

/** musl getopt_long: an exact name, else the one option the prefix names; ambiguity is an error. */
function findLong(specs: readonly OptionSpec[], name: string): OptionSpec | undefined {
  if (!name) return undefined;
  const exact = specs.find((s) => s.long === name);
  if (exact) return exact;
  const matches = specs.filter((s) => s.long.startsWith(name));
  return matches.length === 1 ? matches[0] : undefined;
}

export function hasOption(p: ParsedApkArgs, name: string): boolean {
  return p.options.some((o) => o.name === name);
}

/** The value of the last occurrence (apk keeps the last), or undefined. */
export function optionValue(p: ParsedApkArgs, name: string): string | undefined {
  return p.options.filter((o) => o.name === name).at(-1)?.value;
}

export function optionValues(p: ParsedApkArgs, name: string): string[] {
  return p.options.filter((o) => o.name === name).map((o) => o.value!);
}

/** apk's verbosity after the options: 1, minus each -q, plus each -v. */
export function verbosity(p: ParsedApkArgs): number {
  return 1 + p.options.filter((o) => o.name === 'verbose').length - p.options.filter((o) => o.name === 'quiet').length;
}

/**
 * Global options that choose where packages come from and how they are
 * checked, carried over from the user's command to the wrapper's own apk
 * calls (fetch, policy, update), so they see the same repositories.
 */
const CARRIED = new Set([
  'root', 'repository', 'repositories-file', 'keys-dir', 'cache-dir', 'cache-max-age', 'arch',
  'no-network', 'no-cache', 'timeout', 'no-check-certificate', 'force-refresh', 'force-missing-repositories',
]);

export function repositoryOptions(p: ParsedApkArgs): string[] {
  const out: string[] = [];
  for (const o of p.options) {
    if (!CARRIED.has(o.name)) continue;
    out.push(o.value === undefined ? `--${o.name}` : `--${o.name}=${o.value}`);
  }
  return out;
}

/**
 * The argument list with `extra` options added where getopt reads them
 * after the user's own: before a `--`, or at the end.
 */
export function withOptionsAppended(p: ParsedApkArgs, extra: readonly string[]): string[] {
  const argv = [...p.argv];
  const at = p.terminator ?? argv.length;
  argv.splice(at, 0, ...extra);
  return argv;
}

/** The argument list with `extra` options read before the user's own (so the user's win). */
export function withOptionsPrepended(p: ParsedApkArgs, extra: readonly string[]): string[] {
  return [...extra, ...p.argv];
}
