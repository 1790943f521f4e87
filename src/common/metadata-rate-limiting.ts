// Neutron's [metadata_rate_limiting] group (neutron/common/metadata.py, 23.0.0 / 2023.2), with its names: read by
// the L3 and DHCP agents from their ini files and handed to the metadata proxies as flags
// (--metadata_rate_limiting-<name>, oslo.config's spelling of a group option on the command line). The defaults
// differ: Neutron's (10 queries per 10 s in both windows) refuse the 11th request of a cloud-init boot crawl, which
// makes about 25 within a second; ours (80 per 10 s, a burst of 50 per 2 s) let a crawl through and stop a flood.
// Type-only import: the proxy loads this module and must not load config.ts (yargs, ini).
import type { Opt, Spec } from './config.js';

export const RATE_LIMIT_SECTION = 'metadata_rate_limiting';

const opt = <T>(kind: Opt<T>['kind'], def: T, help: string, cli: boolean, min?: number): Opt<T> => ({ kind, default: def, help, ...(cli ? { cli: true } : {}), ...(min !== undefined ? { min } : {}) });

/** The group; `cli` also registers the flags (the proxy, which reads no file). */
export function metadataRateLimitingOpts(cli: boolean) {
  return {
    [RATE_LIMIT_SECTION]: {
      rate_limit_enabled: opt('bool', false, 'Enable rate limiting on the metadata API: a source address over either limit is answered 429 (as Neutron\'s haproxy deny_status 429) without reaching the metadata agent.', cli),
      ip_versions: opt<string[]>('list', ['4'], 'Comma-separated list of the metadata address IP versions (4, 6) for which rate limiting will be enabled. Unlike Neutron\'s haproxy, both at once are supported.', cli),
      base_window_duration: opt('int', 10, 'Duration (seconds) of the base window on the metadata API.', cli, 1),
      base_query_rate_limit: opt('int', 80, 'Max number of queries to accept during the base window (a source is refused while its sliding-window rate is above it). Neutron\'s default, 10, refuses part of a cloud-init boot crawl.', cli, 0),
      burst_window_duration: opt('int', 2, 'Duration (seconds) of the burst window on the metadata API (Neutron\'s default: 10).', cli, 1),
      burst_query_rate_limit: opt('int', 50, 'Max number of queries to accept during the burst window (Neutron\'s default: 10).', cli, 0),
    },
  } satisfies Spec;
}

export interface MetadataRateLimitingConf {
  rate_limit_enabled: boolean;
  ip_versions: string[];
  base_window_duration: number;
  base_query_rate_limit: number;
  burst_window_duration: number;
  burst_query_rate_limit: number;
}

/** ip_versions as numbers; anything but 4 and 6 is an error (a message), as Neutron's choices are. */
export function rateLimitIpVersions(c: MetadataRateLimitingConf): { versions: (4 | 6)[] } | { error: string } {
  const versions: (4 | 6)[] = [];
  for (const v of c.ip_versions) {
    if (v !== '4' && v !== '6') return { error: `[${RATE_LIMIT_SECTION}] ip_versions: ${JSON.stringify(v)} is not 4 or 6` };
    if (!versions.includes(Number(v) as 4 | 6)) versions.push(Number(v) as 4 | 6);
  }
  return { versions };
}

/** The proxy flags for an agent's group: none when rate limiting is off (the proxies' command lines stay as they were). */
export function rateLimitArgs(c: MetadataRateLimitingConf | undefined): string[] {
  if (!c || !c.rate_limit_enabled) return [];
  const p = `--${RATE_LIMIT_SECTION}-`;
  return [
    `${p}rate_limit_enabled=True`,
    `${p}ip_versions=${c.ip_versions.join(',')}`,
    `${p}base_window_duration=${c.base_window_duration}`,
    `${p}base_query_rate_limit=${c.base_query_rate_limit}`,
    `${p}burst_window_duration=${c.burst_window_duration}`,
    `${p}burst_query_rate_limit=${c.burst_query_rate_limit}`,
  ];
}
