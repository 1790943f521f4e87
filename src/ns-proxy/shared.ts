// Shared mode: one quantum-ns-metadata-proxy process for all of an agent's namespaces. The agent binds a
// listening socket inside each router or network namespace (a socket keeps the namespace it was created
// in) and hands it over on fd 4, then says what it is on the IPC channel (fd 3); each becomes a
// NamespaceListener with its own id lines and maxconn, over one ProxyRuntime (one agent pool, one sweeper).
// Loaded only with --shared, so a per-namespace proxy never pays for it. Protocol: src/common/shared-proxy.ts.
import { chownSync, fstatSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { dropPrivileges, removePidFile, writePidFile } from '../common/daemon.js';
import { ConfigError, errorMessage } from '../common/errors.js';
import type { LiteLogger } from '../common/lite-log.js';
import {
  parseAgentMessage,
  parseSharedState,
  SHARED_FD_SOCKET,
  sharedStateDir,
  sharedStateFile,
  type AgentMessage,
  type ListenerKind,
  type ProxyMessage,
  type SharedProxyState,
} from '../common/shared-proxy.js';
import { isErrno, loadNetnsSocket } from '../linux/netns-socket.js';
import { NamespaceListener, ProxyRuntime, type GuestLimits, type RuntimeConfig } from './proxy.js';

export { sharedPidFile, sharedUuid } from '../common/shared-proxy.js';

export interface SharedOptions {
  name: string;
  statePath: string;
  pidFile: string;
  runtime: RuntimeConfig;
  limits: GuestLimits;
  user?: string | undefined;
  group?: string | undefined;
  log: LiteLogger;
}

/** One served namespace: kept small, a shared proxy holds a thousand of them. */
interface Served {
  l: NamespaceListener;
  kind: ListenerKind;
  id: string;
  namespace: string;
  host: string;
  port: number;
  fd: number;
}

/** uid/gid for chown: numbers as they are, names from /etc/passwd and /etc/group. */
function lookupId(file: string, v: string | undefined): number | undefined {
  if (!v) return undefined;
  if (/^\d+$/.test(v)) return Number(v);
  try {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const f = line.split(':');
      if (f[0] === v && f[2] !== undefined) return Number(f[2]);
    }
  } catch {
    /* no such file: dropPrivileges reports the unknown name */
  }
  return undefined;
}

function stateOwner(file: string): number | undefined {
  try {
    return parseSharedState(readFileSync(file, 'utf8'))?.pid;
  } catch {
    return undefined;
  }
}

export async function runShared(o: SharedOptions): Promise<{ readonly pending: number; stop(): Promise<void> }> {
  const log = o.log;
  if (typeof process.send !== 'function') throw new ConfigError('--shared must be started by its agent: an IPC channel on fd 3 and a descriptor socket on fd 4');
  let fdOk = false;
  try {
    fdOk = fstatSync(SHARED_FD_SOCKET).isSocket();
  } catch {
    /* not open */
  }
  if (!fdOk) throw new ConfigError(`--shared: fd ${SHARED_FD_SOCKET} must be the agent's descriptor socket`);
  const netns = loadNetnsSocket();
  const runtime = new ProxyRuntime(o.runtime, log);
  const served = new Map<string, Served>();
  /** Descriptors received for a tag and not yet taken by its `add`, oldest first. */
  const arrived = new Map<string, number[]>();
  const stateFile = sharedStateFile(o.statePath, o.name);
  let claimed = false;
  let stopping = false;

  // Written while still privileged; the state directory is handed to the user the proxy runs as, since the
  // file is rewritten on every change after the drop (atomically: temp file + rename in that directory).
  writePidFile(o.pidFile);
  mkdirSync(sharedStateDir(o.statePath), { recursive: true, mode: 0o755 });
  const uid = lookupId('/etc/passwd', o.user);
  const gid = lookupId('/etc/group', o.group);
  if ((uid !== undefined || gid !== undefined) && process.getuid?.() === 0) chownSync(sharedStateDir(o.statePath), uid ?? 0, gid ?? 0);

  const send = (m: ProxyMessage): void => {
    if (process.connected) process.send!(m);
  };

  /** This process's state file, unless a newer shared proxy (an agent's handover) has claimed it. */
  const writeState = (): void => {
    if (claimed) {
      const owner = stateOwner(stateFile);
      if (owner !== undefined && owner !== process.pid) return;
    }
    claimed = true;
    const st: SharedProxyState = { pid: process.pid, name: o.name, listeners: [] };
    for (const [tag, s] of served) st.listeners.push({ tag, kind: s.kind, id: s.id, namespace: s.namespace, host: s.host, port: s.port, fd: s.fd });
    const tmp = `${stateFile}.${process.pid}.tmp`;
    try {
      writeFileSync(tmp, `${JSON.stringify(st)}\n`);
      renameSync(tmp, stateFile);
    } catch (e) {
      log.error({ file: stateFile, err: errorMessage(e) }, 'cannot write the state file');
    }
  };

  // Replies wait for the state file, written once per event-loop turn however many changes came in it:
  // when the agent reads `added`, a restarted agent would find that listener in the file.
  let replies: ProxyMessage[] = [];
  let flushing = false;
  const reply = (m: ProxyMessage): void => {
    replies.push(m);
    if (flushing) return;
    flushing = true;
    setImmediate(() => {
      flushing = false;
      if (!stopping) writeState();
      const out = replies;
      replies = [];
      for (const r of out) send(r);
    });
  };

  const drainFds = (): void => {
    for (;;) {
      let m: { tag: string; fds: number[] } | null;
      try {
        m = netns.recvFds(SHARED_FD_SOCKET);
      } catch (e) {
        // The agent's end is closed (it died): nothing more will come.
        if (!(isErrno(e) && e.code === 'ECONNRESET')) log.error({ err: errorMessage(e) }, 'cannot read the descriptor socket');
        return;
      }
      if (m === null) return;
      const [fd, ...extra] = m.fds;
      for (const x of extra) netns.closeFd(x);
      if (fd === undefined) continue;
      const q = arrived.get(m.tag);
      if (q) q.push(fd);
      else arrived.set(m.tag, [fd]);
    }
  };

  const add = async (m: Extract<AgentMessage, { op: 'add' }>): Promise<void> => {
    drainFds();
    const q = arrived.get(m.tag);
    const fd = q?.shift();
    if (q?.length === 0) arrived.delete(m.tag);
    if (stopping) {
      if (fd !== undefined) netns.closeFd(fd);
      return reply({ op: 'error', tag: m.tag, message: 'the proxy is stopping' });
    }
    if (served.has(m.tag)) {
      // Already served (the agent re-sent it): the new copy is not needed.
      if (fd !== undefined) netns.closeFd(fd);
      return reply({ op: 'added', tag: m.tag });
    }
    if (fd === undefined) return reply({ op: 'error', tag: m.tag, message: `no listening socket received for ${m.tag}` });
    let l: NamespaceListener;
    try {
      l = new NamespaceListener(runtime, o.limits, m.kind === 'router' ? { routerId: m.id } : { networkId: m.id });
      await l.listen({ fd });
    } catch (e) {
      netns.closeFd(fd);
      log.error({ tag: m.tag, namespace: m.namespace, err: errorMessage(e) }, 'cannot serve a listener');
      return reply({ op: 'error', tag: m.tag, message: errorMessage(e) });
    }
    served.set(m.tag, { l, kind: m.kind, id: m.id, namespace: m.namespace, host: m.host, port: m.port, fd });
    if (log.isDebug) log.debug({ tag: m.tag, namespace: m.namespace, host: m.host, port: m.port, fd }, 'listener added');
    reply({ op: 'added', tag: m.tag });
  };

  const remove = (tag: string): void => {
    const s = served.get(tag);
    if (s) {
      served.delete(tag);
      // The listening socket closes now (the agent then closes its copy and the port is free); guests
      // with a request in flight get their answer first.
      void s.l.close().then(() => log.isDebug && log.debug({ tag }, 'listener drained'));
      if (log.isDebug) log.debug({ tag, namespace: s.namespace }, 'listener removed');
    }
    reply({ op: 'removed', tag });
  };

  // Messages about one tag run in order: a remove that arrives while its add is still listening waits for it.
  const ops = new Map<string, Promise<void>>();
  const inOrder = (tag: string, fn: () => Promise<void> | void): void => {
    const next = (ops.get(tag) ?? Promise.resolve()).then(fn).catch((e: unknown) => log.error({ tag, err: errorMessage(e) }, 'listener operation failed'));
    ops.set(tag, next);
    void next.then(() => ops.get(tag) === next && ops.delete(tag));
  };

  process.on('message', (raw: unknown) => {
    const m = parseAgentMessage(raw);
    if (!m) {
      log.warn({ message: typeof raw === 'object' ? JSON.stringify(raw)?.slice(0, 200) : String(raw) }, 'unknown message from the agent');
      return;
    }
    if (m.op === 'add') {
      // Read the descriptor now: it was sent just before this message, and the next add's may follow it.
      drainFds();
      inOrder(m.tag, () => add(m));
    } else if (m.op === 'remove') inOrder(m.tag, () => remove(m.tag));
    else {
      const listeners = [...served].map(([tag, s]) => ({ tag, kind: s.kind, id: s.id, namespace: s.namespace, host: s.host, port: s.port, connections: s.l.connections, answered: s.l.answered }));
      send({ op: 'status', listeners, pending: runtime.pending, guests: runtime.guests, responses: runtime.responses });
    }
  });
  // Like haproxy outliving its agent: the agent stopped or died, the namespaces are still served.
  process.on('disconnect', () => log.warn({ listeners: served.size }, 'agent disconnected (IPC channel closed): serving on'));
  // Kept alive even with no listener and no agent, for the next agent to adopt or replace.
  setInterval(() => {}, 1 << 30);

  dropPrivileges(o.user, o.group);
  writeState();
  log.info({ name: o.name, socket: o.runtime.socketPath, state_file: stateFile, uid: process.getuid?.(), gid: process.getgid?.() }, 'shared metadata proxy ready');
  send({ op: 'ready', pid: process.pid });

  return {
    get pending() {
      return runtime.pending;
    },
    async stop() {
      stopping = true;
      const all = [...served.values()];
      served.clear();
      await Promise.all(all.map((s) => s.l.close()));
      for (const q of arrived.values()) for (const fd of q) netns.closeFd(fd);
      runtime.close();
      removePidFile(o.pidFile);
      if (stateOwner(stateFile) === process.pid) {
        try {
          unlinkSync(stateFile);
        } catch {
          /* the agent removes it */
        }
      }
    },
  };
}
