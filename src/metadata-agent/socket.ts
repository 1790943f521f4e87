// The agent's Unix socket: directory 0755, a stale socket unlinked (anything else there is an error),
// and the mode deduced from who the proxies run as (Neutron's UnixDomainMetadataProxy._get_socket_mode).
import { chmodSync, lstatSync, mkdirSync, readFileSync, unlinkSync } from 'node:fs';
import type { Server } from 'node:http';
import { dirname } from 'node:path';
import { ConfigError } from '../common/errors.js';

export const USER_MODE = 0o644;
export const GROUP_MODE = 0o664;
export const ALL_MODE = 0o666;

/** Look a name up in /etc/passwd or /etc/group: its numeric id, or undefined. */
function idOf(file: '/etc/passwd' | '/etc/group', name: string): number | undefined {
  try {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const f = line.split(':');
      if (f[0] === name && f[2] !== undefined) return Number(f[2]);
    }
  } catch {
    /* no such file: no names */
  }
  return undefined;
}

/** agent_utils.is_effective_user: the uid or user name the agent runs as. */
export function isEffectiveUser(user: string, euid = process.geteuid?.() ?? -1): boolean {
  const id = /^\d+$/.test(user) ? Number(user) : idOf('/etc/passwd', user);
  return id === euid;
}

export function isEffectiveGroup(group: string, egid = process.getegid?.() ?? -1): boolean {
  const id = /^\d+$/.test(group) ? Number(group) : idOf('/etc/group', group);
  return id === egid;
}

export function socketMode(mode: string, user: string, group: string): number {
  switch (mode) {
    case 'user':
      return USER_MODE;
    case 'group':
      return GROUP_MODE;
    case 'all':
      return ALL_MODE;
    case 'deduce':
      if (!user || user === '0' || user === 'root' || isEffectiveUser(user)) return USER_MODE;
      if (!group || isEffectiveGroup(group)) return GROUP_MODE;
      return ALL_MODE;
    default:
      throw new ConfigError(`metadata_proxy_socket_mode = ${JSON.stringify(mode)}: must be one of deduce, user, group, all`);
  }
}

/** Make the directory (0755) and remove a stale socket; a non-socket file at the path is an error. */
export function prepareSocketPath(path: string): void {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (!st.isSocket()) throw new ConfigError(`${path} exists and is not a socket; refusing to remove it`);
  try {
    unlinkSync(path);
  } catch (e) {
    throw new ConfigError(`cannot remove the stale socket ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
}

/** Listen on the Unix socket with the backlog, then apply the mode. */
export function listenUnix(server: Server, path: string, backlog: number, mode: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ path, backlog }, () => {
      server.off('error', reject);
      try {
        chmodSync(path, mode);
        resolve();
      } catch (e) {
        reject(e);
      }
    });
  });
}
