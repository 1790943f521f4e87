// A flags-only parser over the same option declarations as config.ts, for daemons that read no config
// file and must stay small (quantum-ns-metadata-proxy: one process per router). It imports nothing but
// the declarations' types, so neither yargs nor ini is loaded (about 7 MB of heap saved per process).
import { ConfigError } from './errors.js';
import type { Opt, Resolved, Spec } from './config.js';

export interface FlagOptions {
  prog: string;
  description: string;
  /** Extra flag names, flag → DEFAULT option name (e.g. 'log-file' → 'log_file'). */
  aliases?: Record<string, string>;
}

export type FlagResult<S extends Spec> = { help: string } | { conf: Resolved<S> };

function coerce(opt: Opt<unknown>, raw: string | true, flag: string): unknown {
  const shown = opt.secret ? '<secret>' : JSON.stringify(raw);
  const fail = (why: string): never => {
    throw new ConfigError(`--${flag}=${shown}: ${why}`);
  };
  let v: unknown;
  if (opt.kind === 'bool') {
    if (raw === true) v = true;
    else {
      const l = raw.trim().toLowerCase();
      if (['true', '1', 'yes', 'on'].includes(l)) v = true;
      else if (['false', '0', 'no', 'off'].includes(l)) v = false;
      else fail('not a boolean (use True or False)');
    }
  } else {
    if (raw === true) fail('a value is required');
    const s = (raw as string).trim();
    if (opt.kind === 'int') {
      if (!/^[+-]?\d+$/.test(s)) fail('not an integer');
      v = Number.parseInt(s, 10);
    } else if (opt.kind === 'float') {
      const n = Number(s);
      if (s === '' || !Number.isFinite(n)) fail('not a number');
      v = n;
    } else if (opt.kind === 'list') {
      v = s === '' ? [] : s.split(',').map((x) => x.trim()).filter((x) => x !== '');
    } else v = s;
  }
  if (opt.choices && !opt.choices.includes(String(v))) fail(`must be one of ${opt.choices.join(', ')}`);
  if (typeof v === 'number') {
    if (opt.min !== undefined && v < opt.min) fail(`must be >= ${opt.min}`);
    if (opt.max !== undefined && v > opt.max) fail(`must be <= ${opt.max}`);
  }
  return v;
}

/**
 * Parse `--name=value`, `--name value`, `--flag`, `--noflag` (booleans) for the DEFAULT section of a spec
 * (other sections' options that set `cli` as `--<section>-<name>`). Unknown flags and positional
 * arguments are ConfigErrors, as with oslo.config. `--help`/`-h` returns the usage text instead.
 */
export function parseFlags<S extends Spec>(spec: S, argv: readonly string[], fo: FlagOptions): FlagResult<S> {
  const byFlag = new Map<string, [string, string]>();
  const conf: Record<string, Record<string, unknown>> = {};
  for (const [section, opts] of Object.entries(spec)) {
    conf[section] = {};
    for (const [name, opt] of Object.entries(opts)) {
      conf[section][name] = Array.isArray(opt.default) ? [...opt.default] : opt.default;
      if (section !== 'DEFAULT' && !opt.cli) continue;
      byFlag.set(section === 'DEFAULT' ? name : `${section}-${name}`, [section, name]);
    }
  }
  for (const [alias, target] of Object.entries(fo.aliases ?? {})) {
    if (spec.DEFAULT?.[target]) byFlag.set(alias, ['DEFAULT', target]);
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') return { help: usage(spec, fo) };
    if (!a.startsWith('--') || a === '--') throw new ConfigError(`unexpected argument: ${a}`);
    const eq = a.indexOf('=');
    const flag = eq < 0 ? a.slice(2) : a.slice(2, eq);
    let target = byFlag.get(flag);
    let negate = false;
    if (!target && flag.startsWith('no')) {
      const t = byFlag.get(flag.slice(2));
      if (t && spec[t[0]]![t[1]]!.kind === 'bool') {
        target = t;
        negate = true;
      }
    }
    if (!target) throw new ConfigError(`unrecognized arguments: ${a}`);
    const opt = spec[target[0]]![target[1]]!;
    let raw: string | true;
    if (eq >= 0) raw = a.slice(eq + 1);
    else if (opt.kind === 'bool' || negate) raw = true;
    else {
      const next = argv[i + 1];
      if (next === undefined) throw new ConfigError(`--${flag}: a value is required`);
      raw = next;
      i++;
    }
    let v = coerce(opt, raw, flag);
    if (negate) {
      if (raw !== true) throw new ConfigError(`--${flag} takes no value`);
      v = !v;
    }
    conf[target[0]]![target[1]] = v;
  }
  return { conf: conf as Resolved<S> };
}

function usage(spec: Spec, fo: FlagOptions): string {
  const lines = [`Usage: ${fo.prog} [options]`, '', fo.description, '', 'Options:'];
  for (const [section, opts] of Object.entries(spec)) {
    for (const [name, opt] of Object.entries(opts)) {
      if (section !== 'DEFAULT' && !opt.cli) continue;
      const flag = section === 'DEFAULT' ? name : `${section}-${name}`;
      const d = opt.default;
      const def = d === undefined || opt.secret ? '' : ` (default: ${Array.isArray(d) ? d.join(',') : String(d)})`;
      lines.push(`  --${flag}${opt.kind === 'bool' ? `, --no${flag}` : ' VALUE'}`, `      ${opt.help}${def}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
