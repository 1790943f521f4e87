// A small argv parser for the CLIs: --opt value, --opt=value, repeatable options, flags, positionals,
// '-' and '_' interchangeable in option names (the era's clients took both --ip-version and --ip_version).

export type ArgKind = 'string' | 'list' | 'flag';

export interface ParsedArgs {
  opts: Record<string, string | string[] | boolean | undefined>;
  positionals: string[];
  /** Options not in the spec, as name → values (list commands turn these into filters). */
  extra: Record<string, string[]>;
}

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

const norm = (s: string) => s.replace(/_/g, '-');

/**
 * Parse argv against spec (keys are canonical long names without dashes, e.g. 'ip-version'; short aliases
 * as '-f' → 'format' in `short`). Unknown options go to `extra` when allowExtra, else UsageError.
 */
export function parseArgs(argv: string[], spec: Record<string, ArgKind>, o: { short?: Record<string, string>; allowExtra?: boolean } = {}): ParsedArgs {
  const opts: ParsedArgs['opts'] = {};
  const positionals: string[] = [];
  const extra: Record<string, string[]> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      // quantumclient's "-- --key value" filter syntax: everything after is options for filtering.
      continue;
    }
    let name: string | undefined;
    let inline: string | undefined;
    if (a.startsWith('--') && a.length > 2) {
      const eq = a.indexOf('=');
      name = norm(eq >= 0 ? a.slice(2, eq) : a.slice(2));
      inline = eq >= 0 ? a.slice(eq + 1) : undefined;
    } else if (/^-[a-zA-Z]$/.test(a) && o.short?.[a]) {
      name = o.short[a];
    } else if (/^-[a-zA-Z].+/.test(a) && o.short?.[a.slice(0, 2)]) {
      name = o.short[a.slice(0, 2)];
      inline = a.slice(2);
    } else {
      positionals.push(a);
      continue;
    }
    const kind = spec[name!];
    const takeValue = (): string => {
      if (inline !== undefined) return inline;
      const v = argv[i + 1];
      if (v === undefined) throw new UsageError(`argument --${name}: expected one argument`);
      i++;
      return v;
    };
    if (!kind) {
      if (!o.allowExtra) throw new UsageError(`unrecognized arguments: ${a}`);
      (extra[name!] ??= []).push(takeValue());
      continue;
    }
    if (kind === 'flag') {
      if (inline !== undefined) throw new UsageError(`argument --${name}: ignored explicit argument '${inline}'`);
      opts[name!] = true;
    } else if (kind === 'list') {
      const cur = (opts[name!] as string[] | undefined) ?? [];
      cur.push(takeValue());
      opts[name!] = cur;
    } else {
      opts[name!] = takeValue();
    }
  }
  return { opts, positionals, extra };
}

/** "key1=v1,key2=v2" as the clients take --allocation-pool, --host-route and --fixed-ip. */
export function parseKeyValues(arg: string, what: string, allowed: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of arg.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new UsageError(`invalid ${what} '${arg}': expected ${allowed.map((k) => `${k}=...`).join(',')}`);
    const k = part.slice(0, eq).trim().replace(/-/g, '_');
    if (!allowed.includes(k)) throw new UsageError(`invalid key '${k}' in ${what}; allowed: ${allowed.join(', ')}`);
    out[k] = part.slice(eq + 1).trim();
  }
  return out;
}
