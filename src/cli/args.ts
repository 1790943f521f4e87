// A small argv parser for the CLIs: --opt value, --opt=value, repeatable options, flags, positionals,
// '-' and '_' interchangeable in option names (the era's clients took both --ip-version and --ip_version).

import type { PasswordAuthOptions } from '../common/keystone.js';

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

// ---- plumbing both clients' main() share ----

/** Global options of both clients (each adds its own). */
const KEYSTONE_GLOBALS = ['os-auth-url', 'os-username', 'os-password', 'os-project-name', 'os-tenant-name', 'os-user-domain-name', 'os-project-domain-name', 'os-region-name', 'os-interface'];
export const COMMON_GLOBALS: Record<string, ArgKind> = { 'os-url': 'string', 'os-project-id': 'string', 'os-tenant-id': 'string', format: 'string', help: 'flag', ...Object.fromEntries(KEYSTONE_GLOBALS.map((k) => [k, 'string' as const])) };
/** Spellings of the global options that take a value (their value is never the subcommand). */
export const COMMON_GLOBALS_WITH_VALUE = ['--os-url', '--os_url', '--os-project-id', '--os_project_id', '--os-tenant-id', '--os_tenant_id', '--format', '-f', ...KEYSTONE_GLOBALS.flatMap((k) => [`--${k}`, `--${k.replace(/-/g, '_')}`])];

/**
 * Keystone credentials as the OpenStack clients take them (--os-auth-url or OS_AUTH_URL, OS_USERNAME, OS_PASSWORD,
 * OS_PROJECT_NAME / OS_TENANT_NAME, OS_USER_DOMAIN_NAME, OS_PROJECT_DOMAIN_NAME, OS_REGION_NAME, OS_INTERFACE);
 * undefined without an auth URL (noauth, as before). A missing piece is a UsageError worded as the clients word it.
 */
export function keystoneOf(opts: ParsedArgs['opts']): PasswordAuthOptions | undefined {
  const get = (flag: string, ...envs: string[]) => (opts[flag] as string | undefined) ?? envs.map((e) => process.env[e]).find((v) => v !== undefined && v !== '');
  const authUrl = get('os-auth-url', 'OS_AUTH_URL');
  if (!authUrl) return undefined;
  const need = (flag: string, env: string, what: string, ...more: string[]) => {
    const v = get(flag, env, ...more);
    if (!v) throw new UsageError(`You must provide ${what} via either --${flag} or env[${env}]`);
    return v;
  };
  return {
    authUrl,
    username: need('os-username', 'OS_USERNAME', 'a username'),
    password: need('os-password', 'OS_PASSWORD', 'a password'),
    projectName: (opts['os-tenant-name'] as string | undefined) ?? need('os-project-name', 'OS_PROJECT_NAME', 'a project name', 'OS_TENANT_NAME'),
    userDomainName: get('os-user-domain-name', 'OS_USER_DOMAIN_NAME') ?? 'Default',
    projectDomainName: get('os-project-domain-name', 'OS_PROJECT_DOMAIN_NAME') ?? 'Default',
    regionName: get('os-region-name', 'OS_REGION_NAME'),
    interface: get('os-interface', 'OS_INTERFACE') ?? 'public',
    timeoutMs: 30_000,
  };
}

/** --os-url or $OS_URL when given (it overrides the catalog). */
export function explicitUrl(opts: ParsedArgs['opts']): string | undefined {
  return (opts['os-url'] as string | undefined) ?? (process.env.OS_URL || undefined);
}

export interface FoundCommand {
  /** The subcommand, undefined when argv has none. */
  name: string | undefined;
  index: number;
  /** argv without the subcommand (globals may stand on either side of it). */
  rest: string[];
}

/** The subcommand is the first word that is neither an option nor a global option's value. */
export function findCommand(argv: string[], globalWithValue: ReadonlySet<string>): FoundCommand {
  let index = -1;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (globalWithValue.has(a)) {
      i++;
      continue;
    }
    if (!a.startsWith('-')) {
      index = i;
      break;
    }
  }
  const name = index >= 0 ? argv[index]! : undefined;
  return { name, index, rest: index >= 0 ? [...argv.slice(0, index), ...argv.slice(index + 1)] : argv };
}

/** `prog`, `prog help` and `prog help CMD`: writes the usage and returns the exit status (2 when no command was given at all). */
export function writeHelp(prog: string, argv: string[], found: FoundCommand, commands: Record<string, { usage: string; help: string }>, usage: () => string, write: (s: string) => void): number {
  const topic = found.name === 'help' ? argv[found.index + 1] : undefined;
  if (topic && commands[topic]) write(`usage: ${prog} ${commands[topic].usage}\n\n${commands[topic].help}\n`);
  else write(usage());
  return found.name || argv.includes('--help') || argv.includes('-h') ? 0 : 2;
}

/** -f/--format's value, or argparse's message for a bad one. */
export function outputFormat(opts: ParsedArgs['opts']): { format: 'table' | 'json' | 'value' } | { error: string } {
  const format = (opts.format as string | undefined) ?? 'table';
  if (format === 'table' || format === 'json' || format === 'value') return { format };
  return { error: `argument -f/--format: invalid choice: '${format}' (choose from 'table', 'json', 'value')` };
}

/** --os-project-id, --os-tenant-id, $OS_PROJECT_ID, $OS_TENANT_ID: the first one given. */
export function projectIdOf(opts: ParsedArgs['opts']): string | undefined {
  return (opts['os-project-id'] as string | undefined) ?? (opts['os-tenant-id'] as string | undefined) ?? process.env.OS_PROJECT_ID ?? process.env.OS_TENANT_ID;
}

/** The i-th positional, or a usage error naming it. */
export function positional(args: ParsedArgs, i: number, what: string): string {
  const v = args.positionals[i];
  if (v === undefined) throw new UsageError(`too few arguments: ${what} is required`);
  return v;
}
