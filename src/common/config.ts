// Option declarations in the oslo.config style: declared once with type, default and help, so
// --help, the etc/ samples and the parser all come from the same place.
import { readFileSync, readdirSync } from 'node:fs';
import { parse as parseIni } from 'ini';
import yargs from 'yargs';
import { ConfigError } from './errors.js';

export type OptKind = 'str' | 'int' | 'float' | 'bool' | 'list';

export interface Opt<T> {
  readonly kind: OptKind;
  readonly default: T;
  readonly help: string;
  readonly choices?: readonly string[];
  readonly min?: number;
  readonly max?: number;
  /** Old names this option is also read from, as [section, name]. */
  readonly deprecated?: readonly (readonly [string, string])[];
  /** Register a command-line flag for it (DEFAULT options always get one). */
  readonly cli?: boolean;
  /** Never echo the value (passwords, shared secrets). */
  readonly secret?: boolean;
  /** What the sample config shows instead of a machine-dependent default (e.g. '<hostname>'). */
  readonly sample?: string;
}

type Extra = Partial<Pick<Opt<unknown>, 'choices' | 'min' | 'max' | 'deprecated' | 'cli' | 'secret' | 'sample'>>;

export const str = (def: string, help: string, extra: Extra = {}): Opt<string> => ({ kind: 'str', default: def, help, ...extra });
export const optStr = (help: string, extra: Extra = {}): Opt<string | undefined> => ({ kind: 'str', default: undefined, help, ...extra });
export const int = (def: number, help: string, extra: Extra = {}): Opt<number> => ({ kind: 'int', default: def, help, ...extra });
export const optInt = (help: string, extra: Extra = {}): Opt<number | undefined> => ({ kind: 'int', default: undefined, help, ...extra });
export const float = (def: number, help: string, extra: Extra = {}): Opt<number> => ({ kind: 'float', default: def, help, ...extra });
export const bool = (def: boolean, help: string, extra: Extra = {}): Opt<boolean> => ({ kind: 'bool', default: def, help, ...extra });
export const list = (def: string[], help: string, extra: Extra = {}): Opt<string[]> => ({ kind: 'list', default: def, help, ...extra });

export type Section = Record<string, Opt<unknown>>;
export type Spec = Record<string, Section>;
export type Resolved<S extends Spec> = { [K in keyof S]: { [O in keyof S[K]]: S[K][O] extends Opt<infer T> ? T : never } };

/** Merge option groups; later groups may add sections or options, not redefine them. */
export function mergeSpecs<A extends Spec, B extends Spec>(a: A, b: B): A & B {
  const out: Spec = {};
  for (const s of [a, b]) {
    for (const [section, opts] of Object.entries(s)) out[section] = { ...(out[section] ?? {}), ...opts };
  }
  return out as A & B;
}

/** The logging options every daemon takes, named as oslo.log names them. */
export const loggingOpts = {
  DEFAULT: {
    debug: bool(false, 'Print debugging output (set logging level to DEBUG instead of default INFO level).', { cli: true }),
    verbose: bool(false, 'Print more verbose output (set logging level to INFO instead of default WARNING level).', { cli: true }),
    log_file: optStr('(Optional) Name of log file to send logging output to. If no default is set, logging will go to stderr.', { cli: true }),
    log_dir: optStr('(Optional) The base directory used for relative log_file paths.', { cli: true }),
  },
} satisfies Spec;

function coerce(kind: OptKind, raw: unknown): unknown {
  if (raw === undefined || raw === null) return undefined;
  if (Array.isArray(raw)) raw = raw[raw.length - 1];
  const s = String(raw).trim();
  switch (kind) {
    case 'str':
      return s;
    case 'int': {
      if (!/^[+-]?\d+$/.test(s)) throw new Error(`not an integer`);
      return Number.parseInt(s, 10);
    }
    case 'float': {
      const n = Number(s);
      if (s === '' || !Number.isFinite(n)) throw new Error(`not a number`);
      return n;
    }
    case 'bool': {
      const l = s.toLowerCase();
      if (['true', '1', 'yes', 'on'].includes(l) || typeof raw === 'boolean' && raw) return true;
      if (['false', '0', 'no', 'off'].includes(l) || typeof raw === 'boolean' && !raw) return false;
      throw new Error(`not a boolean (use True or False)`);
    }
    case 'list':
      return s === '' ? [] : s.split(',').map((x) => x.trim()).filter((x) => x !== '');
  }
}

function check(opt: Opt<unknown>, value: unknown): void {
  if (value === undefined) return;
  if (opt.choices && !opt.choices.includes(String(value))) throw new Error(`must be one of ${opt.choices.join(', ')}`);
  if (typeof value === 'number') {
    if (opt.min !== undefined && value < opt.min) throw new Error(`must be >= ${opt.min}`);
    if (opt.max !== undefined && value > opt.max) throw new Error(`must be <= ${opt.max}`);
  }
}

export interface LoadOptions {
  prog: string;
  description: string;
  /** Read no config files at all (quantum-ns-metadata-proxy takes flags only). */
  noConfigFiles?: boolean;
  /** Extra flag aliases, flag → DEFAULT option name (e.g. 'log-file' → 'log_file'). */
  aliases?: Record<string, string>;
  /** Positional-free: reject unknown flags. */
  strict?: boolean;
}

export interface Loaded<S extends Spec> {
  conf: Resolved<S>;
  configFiles: string[];
  /** Unknown options seen in files: "file: [section] name". Logged as warnings by the caller. */
  warnings: string[];
}

type IniTree = Record<string, unknown>;

function readIni(file: string): IniTree {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config file ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  // oslo.config allows "key = value" with values containing '#' only after whitespace; ini handles ';' and '#' comments.
  return parseIni(text) as IniTree;
}

/**
 * Parse argv (without node and script), read every --config-file in order (later wins),
 * apply CLI flags last. Throws ConfigError with a one-line message naming the file, option and value.
 */
export function loadConfig<S extends Spec>(spec: S, argv: string[], lo: LoadOptions): Loaded<S> {
  const y = yargs(argv)
    .scriptName(lo.prog)
    .usage(`Usage: ${lo.prog} [options]\n\n${lo.description}`)
    .help('help')
    .alias('help', 'h')
    .version(false)
    .parserConfiguration({ 'camel-case-expansion': false, 'dot-notation': false, 'boolean-negation': false })
    .wrap(Math.min(120, process.stdout.columns ?? 100));
  if (!lo.noConfigFiles) {
    y.option('config-file', { type: 'string', array: true, describe: 'Path to a config file to use. Multiple config files can be specified, with values in later files taking precedence.' });
    y.option('config-dir', { type: 'string', describe: 'Path to a config directory; every *.conf file in it is read after the --config-file files.' });
  }
  const flagToOpt = new Map<string, [string, string]>();
  const negFlags = new Map<string, [string, string]>();
  for (const [section, opts] of Object.entries(spec)) {
    for (const [name, opt] of Object.entries(opts)) {
      if (section !== 'DEFAULT' && !opt.cli) continue;
      const flag = section === 'DEFAULT' ? name : `${section}-${name}`;
      flagToOpt.set(flag, [section, name]);
      const def = opt.default === undefined ? '' : ` (default: ${Array.isArray(opt.default) ? opt.default.join(',') : String(opt.default)})`;
      y.option(flag, { type: opt.kind === 'bool' ? 'boolean' : 'string', describe: `${opt.help}${opt.secret ? '' : def}`, default: undefined });
      if (opt.kind === 'bool') {
        const neg = section === 'DEFAULT' ? `no${name}` : `${section}-no${name}`;
        negFlags.set(neg, [section, name]);
        y.option(neg, { type: 'boolean', describe: `The inverse of --${flag}`, default: undefined, hidden: true });
      }
    }
  }
  // oslo.log spells these with dashes on the command line (--log-file, --log-dir); accept both everywhere.
  const aliases = { 'log-file': 'log_file', 'log-dir': 'log_dir', ...(lo.aliases ?? {}) };
  for (const [alias, target] of Object.entries(aliases)) {
    const t = flagToOpt.get(target);
    if (!t) continue;
    flagToOpt.set(alias, t);
    const opt = spec[t[0]]![t[1]]!;
    y.option(alias, { type: opt.kind === 'bool' ? 'boolean' : 'string', hidden: true, default: undefined });
  }
  if (lo.strict !== false) y.strictOptions();
  y.fail((msg, err) => {
    throw new ConfigError(err?.message ?? msg);
  });
  const args = y.parseSync() as Record<string, unknown>;

  // Start from defaults.
  const conf: Record<string, Record<string, unknown>> = {};
  const known = new Map<string, Map<string, [string, string]>>(); // file section → file name → [section, name]
  const addKnown = (sec: string, name: string, target: [string, string]) => {
    if (!known.has(sec)) known.set(sec, new Map());
    known.get(sec)!.set(name, target);
  };
  for (const [section, opts] of Object.entries(spec)) {
    conf[section] = {};
    for (const [name, opt] of Object.entries(opts)) {
      conf[section][name] = Array.isArray(opt.default) ? [...opt.default] : opt.default;
      addKnown(section, name, [section, name]);
      for (const [ds, dn] of opt.deprecated ?? []) addKnown(ds, dn, [section, name]);
    }
  }

  const configFiles: string[] = [];
  const warnings: string[] = [];
  if (!lo.noConfigFiles) {
    const files = (args['config-file'] as string[] | undefined) ?? [];
    configFiles.push(...files);
    const dir = args['config-dir'] as string | undefined;
    if (dir) {
      let names: string[];
      try {
        names = readdirSync(dir).filter((n) => n.endsWith('.conf')).sort();
      } catch (e) {
        throw new ConfigError(`cannot read config dir ${dir}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
      }
      configFiles.push(...names.map((n) => `${dir}/${n}`));
    }
    for (const file of configFiles) {
      const tree = readIni(file);
      for (const [sec, body] of Object.entries(tree)) {
        if (body === null || typeof body !== 'object') {
          // A key before any section header: oslo treats that as an error; we warn and ignore.
          warnings.push(`${file}: option ${sec} outside of any [section] ignored`);
          continue;
        }
        const knownSec = known.get(sec);
        for (const [name, raw] of Object.entries(body as Record<string, unknown>)) {
          const target = knownSec?.get(name);
          if (!target) {
            warnings.push(`${file}: unknown option [${sec}] ${name} ignored`);
            continue;
          }
          const opt = spec[target[0]]![target[1]]!;
          let value: unknown;
          try {
            value = coerce(opt.kind, raw);
            check(opt, value);
          } catch (e) {
            const shown = opt.secret ? '<secret>' : JSON.stringify(raw);
            throw new ConfigError(`${file}: [${sec}] ${name} = ${shown}: ${(e as Error).message}`);
          }
          conf[target[0]]![target[1]] = value;
        }
      }
    }
  }

  const apply = (flag: string, target: [string, string], negate: boolean) => {
    const raw = args[flag];
    if (raw === undefined) return;
    const opt = spec[target[0]]![target[1]]!;
    let value: unknown;
    try {
      value = coerce(opt.kind, raw);
      if (negate) value = !value;
      check(opt, value);
    } catch (e) {
      const shown = opt.secret ? '<secret>' : JSON.stringify(raw);
      throw new ConfigError(`--${flag}=${shown}: ${(e as Error).message}`);
    }
    conf[target[0]]![target[1]] = value;
  };
  for (const [flag, target] of flagToOpt) apply(flag, target, false);
  for (const [flag, target] of negFlags) apply(flag, target, true);
  return { conf: conf as Resolved<S>, configFiles, warnings };
}

/** Render an oslo-style sample config file from a spec: every option commented out with its help and default. */
export function renderSample<S extends Spec>(spec: S, title: string): string {
  const lines: string[] = [`# ${title}`, '# Generated from the option declarations by `npm run gen-config`; do not edit by hand.', ''];
  for (const [section, opts] of Object.entries(spec)) {
    lines.push(`[${section}]`, '');
    for (const [name, opt] of Object.entries(opts)) {
      for (const l of wrap(opt.help, 76)) lines.push(`# ${l}`);
      const bits = [`${opt.kind === 'str' ? 'string' : opt.kind === 'bool' ? 'boolean' : opt.kind === 'int' ? 'integer' : opt.kind} value`];
      if (opt.choices) bits.push(`allowed values: ${opt.choices.join(', ')}`);
      if (opt.min !== undefined) bits.push(`minimum: ${opt.min}`);
      if (opt.max !== undefined) bits.push(`maximum: ${opt.max}`);
      lines.push(`# (${bits.join('; ')})`);
      for (const [ds, dn] of opt.deprecated ?? []) lines.push(`# Deprecated name: [${ds}] ${dn}`);
      const d = opt.default;
      const shown = opt.sample !== undefined ? opt.sample : d === undefined ? '<None>' : Array.isArray(d) ? d.join(',') : typeof d === 'boolean' ? (d ? 'true' : 'false') : String(d);
      lines.push(`#${name} = ${shown}`, '');
    }
  }
  return lines.join('\n');
}

function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let cur = '';
  for (const w of text.split(/\s+/)) {
    if (cur && cur.length + 1 + w.length > width) {
      out.push(cur);
      cur = w;
    } else cur = cur ? `${cur} ${w}` : w;
  }
  if (cur) out.push(cur);
  return out;
}
