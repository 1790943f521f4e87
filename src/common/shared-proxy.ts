// The contract between an agent's SharedMetadataProxy (src/linux/shared-proxy.ts) and the shared
// quantum-ns-metadata-proxy (src/ns-proxy/shared.ts): the IPC messages (JSON over node's IPC channel on
// the proxy's fd 3; listening sockets travel beside them over a SOCK_SEQPACKET pair on fd 4, each as one
// SCM_RIGHTS message whose data is the listener's tag), and the state file a restarted agent adopts from.
// Types and tiny checks only: both sides load it.
import { join } from 'node:path';

export type ListenerKind = 'router' | 'network';

/** The proxy's fd carrying the listening sockets (fd 3 is node's IPC channel). */
export const SHARED_FD_SOCKET = 4;

/** agent → proxy. For `add`, the socket for `tag` was sent on fd 4 just before. */
export type AgentMessage =
  | { op: 'add'; tag: string; kind: ListenerKind; id: string; namespace: string; host: string; port: number }
  | { op: 'remove'; tag: string }
  | { op: 'status' };

export interface ListenerStatus {
  tag: string;
  kind: ListenerKind;
  id: string;
  namespace: string;
  host: string;
  port: number;
  /** Guest connections holding a maxconn slot. */
  connections: number;
  /** Answers written to its guests since the proxy started. */
  answered: number;
}

/** proxy → agent. */
export type ProxyMessage =
  | { op: 'ready'; pid: number }
  | { op: 'added'; tag: string }
  | { op: 'removed'; tag: string }
  | { op: 'error'; tag?: string; message: string }
  | { op: 'status'; listeners: ListenerStatus[]; pending: number; guests: number; responses: Record<string, number> };

/** $state_path/external/shared-proxy/<name>.json, rewritten by the proxy on every change. */
export interface SharedProxyState {
  pid: number;
  name: string;
  /** fd: the descriptor number in the proxy process (pidfd_getfd takes it from there). */
  listeners: { tag: string; kind: ListenerKind; id: string; namespace: string; host: string; port: number; fd: number }[];
}

export const sharedStateDir = (statePath: string): string => join(statePath, 'external', 'shared-proxy');
export const sharedStateFile = (statePath: string, name: string): string => join(sharedStateDir(statePath), `${name}.json`);
export const sharedPidFile = (statePath: string, name: string): string => join(statePath, 'external', 'pids', `${name}-shared.pid`);
/** The uuid-like key of a shared proxy in pid files, logs and command lines. */
export const sharedUuid = (name: string): string => `${name}-shared`;

/**
 * `slot`: a namespace's second listening socket for the same id (the IPv6 one: [fe80::a9fe:a9fe%tap]:80 beside
 * 169.254.169.254:80, [::]:9697 beside 0.0.0.0:9697), served as its own listener with the same id lines.
 */
export const listenerTag = (kind: ListenerKind, id: string, slot?: string): string => `${kind}:${id}${slot ? `/${slot}` : ''}`;
/** The slot a tag names (listenerTag's third argument), if any. */
export const tagSlot = (tag: string): string | undefined => /\/([\w-]+)$/.exec(tag)?.[1];

const isObj = (m: unknown): m is Record<string, unknown> => typeof m === 'object' && m !== null && !Array.isArray(m);
const isStr = (v: unknown): v is string => typeof v === 'string';
const isPort = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 65535;
const isKind = (v: unknown): v is ListenerKind => v === 'router' || v === 'network';

/** A message from the agent, or undefined when it is not one. */
export function parseAgentMessage(m: unknown): AgentMessage | undefined {
  if (!isObj(m)) return undefined;
  if (m.op === 'add' && isStr(m.tag) && isKind(m.kind) && isStr(m.id) && isStr(m.namespace) && isStr(m.host) && isPort(m.port)) {
    return { op: 'add', tag: m.tag, kind: m.kind, id: m.id, namespace: m.namespace, host: m.host, port: m.port };
  }
  if (m.op === 'remove' && isStr(m.tag)) return { op: 'remove', tag: m.tag };
  if (m.op === 'status') return { op: 'status' };
  return undefined;
}

/** A message from the proxy, or undefined when it is not one. */
export function parseProxyMessage(m: unknown): ProxyMessage | undefined {
  if (!isObj(m)) return undefined;
  switch (m.op) {
    case 'ready':
      return typeof m.pid === 'number' ? { op: 'ready', pid: m.pid } : undefined;
    case 'added':
    case 'removed':
      return isStr(m.tag) ? { op: m.op, tag: m.tag } : undefined;
    case 'error':
      return isStr(m.message) ? { op: 'error', message: m.message, ...(isStr(m.tag) ? { tag: m.tag } : {}) } : undefined;
    case 'status':
      return Array.isArray(m.listeners) && typeof m.pending === 'number' && typeof m.guests === 'number'
        ? { op: 'status', listeners: m.listeners as ListenerStatus[], pending: m.pending, guests: m.guests, responses: isObj(m.responses) ? (m.responses as Record<string, number>) : {} }
        : undefined;
    default:
      return undefined;
  }
}

/** A state file's content, or undefined when it does not parse as one. */
export function parseSharedState(text: string): SharedProxyState | undefined {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isObj(j) || typeof j.pid !== 'number' || !isStr(j.name) || !Array.isArray(j.listeners)) return undefined;
  const listeners: SharedProxyState['listeners'] = [];
  for (const l of j.listeners as unknown[]) {
    if (!isObj(l) || !isStr(l.tag) || !isKind(l.kind) || !isStr(l.id) || !isStr(l.namespace) || !isStr(l.host) || !isPort(l.port) || typeof l.fd !== 'number') return undefined;
    listeners.push({ tag: l.tag, kind: l.kind, id: l.id, namespace: l.namespace, host: l.host, port: l.port, fd: l.fd });
  }
  return { pid: j.pid, name: j.name, listeners };
}
