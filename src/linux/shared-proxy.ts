// An agent's one metadata proxy for all its namespaces (quantum-ns-metadata-proxy --shared). The agent
// binds each router's or network's listening socket inside that namespace itself (the qm_netns addon:
// microseconds, no process in the namespace), keeps its own copy of the descriptor and hands one to the
// proxy, its child, over a SOCK_SEQPACKET pair (fd 4) with an IPC message (fd 3) saying what it is.
//
// Because the agent holds every listening socket, a proxy killed with -9 loses only the requests it had
// in flight: new guest connections wait in the kernel's backlog until the respawned proxy (at once, on
// the child's exit) is handed the sockets again. A restarted agent adopts a running proxy: it reads the
// proxy's state file, takes the sockets out of it with pidfd_getfd, starts a fresh proxy with them and
// only then SIGTERMs the old one, which finishes its in-flight requests, so serving never stops.
// Protocol and state file: src/common/shared-proxy.ts.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import {
  listenerTag,
  tagSlot,
  parseProxyMessage,
  parseSharedState,
  sharedPidFile,
  sharedStateFile,
  sharedUuid,
  type AgentMessage,
  type ListenerKind,
  type ListenerStatus,
  type ProxyMessage,
  type SharedProxyState,
} from '../common/shared-proxy.js';
import { proxyCommandPrefix, proxyLogArgs, type ProxyConf } from './agent-common.js';
import { rateLimitArgs } from '../common/metadata-rate-limiting.js';
import { pidAlive } from './external-process.js';
import { nativeAddonPath } from './native-addon.js';
import { isErrno, loadNetnsSocket, netnsPath, type NetnsSocket } from './netns-socket.js';

/** This build's addon (dist/native, next to dist/src). */

export interface SharedListener {
  kind: ListenerKind;
  id: string;
  /** The namespace to listen in (qrouter-<id>, qdhcp-<id>); '' for the agent's own (tests). */
  namespace: string;
  host: string;
  port: number;
  /** IP_FREEBIND: bind an address the namespace does not have (yet). */
  freebind?: boolean;
  /** A second socket of the same namespace and id (listenerTag's slot: 'v6'). */
  slot?: string;
}

export interface SharedProxyStatus {
  listeners: ListenerStatus[];
  pending: number;
  guests: number;
  /** Answers to guests by status code since the proxy (re)started. */
  responses: Record<string, number>;
}

export type SharedProxyErrorStatus = 'no-namespace' | 'bind-failed' | 'refused' | 'not-running' | 'removed' | 'timeout';

/** Why a listener could not be served: `status` says which step, `code` the errno when there was one. */
export class SharedProxyError extends Error {
  constructor(
    readonly status: SharedProxyErrorStatus,
    message: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = 'SharedProxyError';
  }
}

export interface SharedMetadataProxyOptions {
  /** The agent: 'quantum-l3-agent' | 'quantum-dhcp-agent' (names the state, pid and log files). */
  name: string;
  conf: ProxyConf;
  log: Logger;
  /** Wait before respawning a dead proxy (default 0: at once; a proxy that dies within 1 s of its start backs off up to 10 s). */
  respawnDelayMs?: number;
  /** Extra proxy flags (timeouts, maxconn...). */
  proxyArgs?: readonly string[];
  /** How a running proxy's sockets are taken over at start: pidfd_getfd (default), or stop it and bind anew. */
  adopt?: 'pidfd' | 'rebind';
  /** Seconds between checks for listeners whose namespace is gone (default 10; 0: only prune() calls). */
  pruneIntervalSec?: number;
  /** The qm_netns addon (default: this build's). */
  addonPath?: string;
}

/** The kernel queue for each namespace's socket while no proxy accepts (a respawn, a handover). */
const BACKLOG = 511;
/** Hand-overs sent but not yet acknowledged: bounds the descriptor socket's queue (EAGAIN beyond ~250). */
const WINDOW = 32;
const READY_TIMEOUT_MS = 15_000;
const ADD_TIMEOUT_MS = 15_000;
const REPLY_TIMEOUT_MS = 5_000;
const STOP_GRACE_MS = 5_000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Entry {
  spec: SharedListener;
  tag: string;
  /** The agent's own copy of the listening socket. */
  fd: number;
  /** The namespace the socket lives in (0: the agent's own), to notice a namespace deleted under it. */
  nsInode: number;
  /** The current proxy serves it. */
  served: boolean;
  waiters: { resolve: () => void; reject: (e: Error) => void }[];
}

const sameSpec = (a: SharedListener, b: SharedListener): boolean => a.kind === b.kind && a.id === b.id && a.namespace === b.namespace && a.host === b.host && a.port === b.port && a.slot === b.slot;
const specTag = (l: SharedListener): string => listenerTag(l.kind, l.id, l.slot);

export class SharedMetadataProxy {
  private readonly netns: NetnsSocket;
  private readonly name: string;
  private readonly statePath: string;
  private readonly log: Logger;
  private readonly entries = new Map<string, Entry>();
  private readonly ops = new Map<string, Promise<unknown>>();
  private child: ChildProcess | undefined;
  /** Our end of the descriptor socket of the current child. */
  private sock: number | undefined;
  private ready = false;
  private readyWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private queue: Entry[] = [];
  private readonly inflight = new Set<string>();
  private readonly removeWaiters = new Map<string, (() => void)[]>();
  private statusWaiters: { resolve: (s: SharedProxyStatus) => void; reject: (e: Error) => void }[] = [];
  private started = false;
  private stopped = false;
  private spawnedAt = 0;
  private backoffMs = 0;
  private respawnTimer: NodeJS.Timeout | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  /** A proxy adopted at start and told to stop, still finishing its requests. */
  private retiring: number | undefined;
  private respawnCount = 0;

  constructor(private readonly o: SharedMetadataProxyOptions) {
    this.name = o.name;
    this.statePath = o.conf.state_path;
    this.log = o.log;
    this.netns = loadNetnsSocket(o.addonPath ?? nativeAddonPath);
  }

  get pidFile(): string {
    return sharedPidFile(this.statePath, this.name);
  }

  get stateFile(): string {
    return sharedStateFile(this.statePath, this.name);
  }

  get logFile(): string {
    return join(this.statePath, 'external', 'logs', `${sharedUuid(this.name)}.log`);
  }

  /** The running proxy's pid (undefined while it is being respawned). */
  get pid(): number | undefined {
    return this.ready ? this.child?.pid : undefined;
  }

  get alive(): boolean {
    return this.ready && this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Proxies started again after one died. */
  get respawns(): number {
    return this.respawnCount;
  }

  get size(): number {
    return this.entries.size;
  }

  has(kind: ListenerKind, id: string, slot?: string): boolean {
    return this.entries.has(listenerTag(kind, id, slot));
  }

  /** What is served (e.g. to reconcile with the agent's routers after an adoption). */
  listeners(): SharedListener[] {
    return [...this.entries.values()].map((e) => ({ ...e.spec }));
  }

  /** Adopt a running shared proxy (its sockets, then a fresh process for them) or spawn one. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    mkdirSync(dirname(this.pidFile), { recursive: true });
    mkdirSync(dirname(this.logFile), { recursive: true });
    const old = await this.adopt();
    await this.spawnProxy();
    await Promise.all([...this.entries.values()].map((e) => this.waitServed(e).catch((err: unknown) => this.log.error({ tag: e.tag, err: errorMessage(err) }, 'adopted listener not served'))));
    if (old !== undefined) {
      this.log.info({ old_pid: old, pid: this.child?.pid, listeners: this.entries.size }, 'shared metadata proxy taken over; stopping the old one (it finishes its requests)');
      this.retire(old);
    }
    const every = this.o.pruneIntervalSec ?? 10;
    if (every > 0) {
      this.pruneTimer = setInterval(() => void this.prune(), every * 1000);
      this.pruneTimer.unref();
    }
  }

  /** Bind in the namespace (the agent keeps its copy), hand it over; resolves once the proxy listens. Idempotent. */
  add(l: SharedListener): Promise<void> {
    const tag = specTag(l);
    return this.serial(tag, async () => {
      const cur = this.entries.get(tag);
      if (cur) {
        if (sameSpec(cur.spec, l)) return cur.served ? undefined : this.waitServed(cur);
        await this.drop(tag);
      }
      if (!this.started || this.stopped) throw new SharedProxyError('not-running', `shared metadata proxy ${this.name} is not running`);
      const e = this.bind(l);
      this.entries.set(tag, e);
      this.queue.push(e);
      this.pump();
      await this.waitServed(e);
    });
  }

  /** The proxy closes it (in-flight requests finish), then the agent closes its copy: the port is free. */
  remove(kind: ListenerKind, id: string, slot?: string): Promise<void> {
    const tag = listenerTag(kind, id, slot);
    return this.serial(tag, () => this.drop(tag));
  }

  /** Remove the listeners whose namespace was deleted (or replaced) under them; returns their tags. */
  async prune(): Promise<string[]> {
    const gone: Entry[] = [];
    for (const e of this.entries.values()) if (e.spec.namespace !== '' && this.namespaceInode(e.spec.namespace) !== e.nsInode) gone.push(e);
    for (const e of gone) {
      this.log.warn({ tag: e.tag, namespace: e.spec.namespace }, 'namespace gone: removing its metadata listener');
      await this.remove(e.spec.kind, e.spec.id, e.spec.slot).catch(() => undefined);
    }
    return gone.map((e) => e.tag);
  }

  /** What the proxy serves right now, from the proxy. */
  status(): Promise<SharedProxyStatus> {
    return new Promise((resolve, reject) => {
      if (!this.alive || !this.child?.connected) return reject(new SharedProxyError('not-running', 'no shared metadata proxy running'));
      const w = { resolve, reject };
      this.statusWaiters.push(w);
      const t = setTimeout(() => {
        this.statusWaiters = this.statusWaiters.filter((x) => x !== w);
        reject(new SharedProxyError('timeout', 'no status from the shared metadata proxy'));
      }, REPLY_TIMEOUT_MS);
      t.unref();
      this.sendIpc({ op: 'status' });
    });
  }

  /** The agent is stopping: the proxy keeps serving (as haproxy outlives its agent); only the channel goes. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.clearTimers();
    const c = this.child;
    this.child = undefined;
    this.ready = false;
    if (c) {
      c.removeAllListeners('message');
      if (c.connected) c.disconnect();
      c.unref();
    }
    this.closeOwn();
    this.log.info({ listeners: this.entries.size }, 'agent stopping: the shared metadata proxy keeps serving');
    for (const e of this.entries.values()) this.closeEntry(e, new SharedProxyError('not-running', 'agent stopping'));
    this.entries.clear();
  }

  /** SIGTERM the proxy (SIGKILL after 5 s) and close every descriptor; its pid and state files go too. */
  async destroy(): Promise<void> {
    this.stopped = true;
    this.clearTimers();
    const c = this.child;
    this.child = undefined;
    this.ready = false;
    const waits: Promise<void>[] = [];
    if (c && c.exitCode === null && c.signalCode === null && c.pid !== undefined) waits.push(this.terminate(c.pid));
    if (this.retiring !== undefined) waits.push(this.terminate(this.retiring));
    await Promise.all(waits);
    if (c?.connected) c.disconnect();
    this.closeOwn();
    for (const e of this.entries.values()) this.closeEntry(e, new SharedProxyError('not-running', 'shared metadata proxy destroyed'));
    this.entries.clear();
    for (const f of [this.pidFile, this.stateFile]) rmSync(f, { force: true });
  }

  // ---- listeners ----

  private bind(l: SharedListener): Entry {
    const tag = specTag(l);
    let fd: number;
    try {
      fd = this.netns.listenInNamespace(l.namespace ? netnsPath(l.namespace) : null, l.host, l.port, BACKLOG, { freebind: l.freebind ?? false });
    } catch (e) {
      const code = isErrno(e) ? e.code : undefined;
      const gone = code === 'ENOENT' && isErrno(e) && e.syscall === 'open';
      throw new SharedProxyError(gone ? 'no-namespace' : 'bind-failed', `metadata listener ${tag} (${l.namespace || 'own namespace'} ${l.host}:${l.port}): ${errorMessage(e)}`, code);
    }
    return { spec: { ...l }, tag, fd, nsInode: l.namespace ? this.netns.socketNetnsInode(fd) : 0, served: false, waiters: [] };
  }

  /** Remove one listener: the proxy first (it closes its copy), then ours. */
  private async drop(tag: string): Promise<void> {
    const e = this.entries.get(tag);
    if (!e) return;
    this.entries.delete(tag);
    this.queue = this.queue.filter((q) => q !== e);
    if (this.child?.connected && (e.served || this.inflight.has(tag))) {
      await new Promise<void>((resolve) => {
        const list = this.removeWaiters.get(tag) ?? [];
        list.push(resolve);
        this.removeWaiters.set(tag, list);
        setTimeout(resolve, REPLY_TIMEOUT_MS).unref();
        this.sendIpc({ op: 'remove', tag });
      });
    }
    this.closeEntry(e, new SharedProxyError('removed', `metadata listener ${tag} removed`));
  }

  private closeEntry(e: Entry, why: Error): void {
    try {
      this.netns.closeFd(e.fd);
    } catch {
      /* already closed */
    }
    const w = e.waiters.splice(0);
    for (const x of w) x.reject(why);
  }

  private waitServed(e: Entry): Promise<void> {
    if (e.served) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const w = { resolve, reject };
      e.waiters.push(w);
      const t = setTimeout(() => {
        e.waiters = e.waiters.filter((x) => x !== w);
        reject(new SharedProxyError('timeout', `metadata listener ${e.tag} not served within ${ADD_TIMEOUT_MS} ms (kept: it is handed over when the proxy is back)`));
      }, ADD_TIMEOUT_MS);
      t.unref();
      const done = w.resolve;
      w.resolve = () => {
        clearTimeout(t);
        done();
      };
      const fail = w.reject;
      w.reject = (err) => {
        clearTimeout(t);
        fail(err);
      };
    });
  }

  /** Hand queued listeners to the proxy, at most WINDOW unacknowledged at a time. */
  private pump(): void {
    if (!this.ready || this.sock === undefined || !this.child?.connected) return;
    while (this.inflight.size < WINDOW && this.queue.length > 0) {
      const e = this.queue.shift()!;
      if (this.entries.get(e.tag) !== e || e.served) continue;
      try {
        this.netns.sendFds(this.sock, e.tag, [e.fd]);
      } catch (err) {
        if (isErrno(err) && err.code === 'EAGAIN') {
          this.queue.unshift(e);
          setTimeout(() => this.pump(), 5).unref();
          return;
        }
        this.log.error({ tag: e.tag, err: errorMessage(err) }, 'cannot pass a listening socket to the shared metadata proxy');
        return;
      }
      this.inflight.add(e.tag);
      const s = e.spec;
      this.sendIpc({ op: 'add', tag: e.tag, kind: s.kind, id: s.id, namespace: s.namespace, host: s.host, port: s.port });
    }
  }

  private serial<T>(tag: string, fn: () => Promise<T>): Promise<T> {
    const run = (this.ops.get(tag) ?? Promise.resolve()).then(fn);
    const tail = run.catch(() => undefined);
    this.ops.set(tag, tail);
    void tail.then(() => this.ops.get(tag) === tail && this.ops.delete(tag));
    return run;
  }

  private namespaceInode(ns: string): number | undefined {
    try {
      return statSync(netnsPath(ns)).ino;
    } catch {
      return undefined;
    }
  }

  // ---- the proxy process ----

  private argv(): string[] {
    const c = this.o.conf;
    const argv = [...proxyCommandPrefix(c.metadata_proxy_cmd), '--shared', `--shared_name=${this.name}`, `--pid_file=${this.pidFile}`, `--state_path=${this.statePath}`];
    if (c.metadata_proxy_socket) argv.push(`--metadata_proxy_socket=${c.metadata_proxy_socket}`);
    if (c.metadata_proxy_user) argv.push(`--metadata_proxy_user=${c.metadata_proxy_user}`);
    if (c.metadata_proxy_group) argv.push(`--metadata_proxy_group=${c.metadata_proxy_group}`);
    argv.push('--nodaemonize', ...proxyLogArgs(c, sharedUuid(this.name)), ...rateLimitArgs(c.metadata_rate_limiting), ...(this.o.proxyArgs ?? []));
    return argv;
  }

  private spawnProxy(): Promise<void> {
    const [mine, theirs] = this.netns.socketpair();
    const argv = this.argv();
    const out = openSync(this.logFile, 'a');
    let child: ChildProcess;
    try {
      this.log.info({ argv }, 'starting the shared metadata proxy');
      // Its own process group: a signal to the agent's group (Ctrl-C, a unit stop) leaves it serving.
      child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', out, out, 'ipc', theirs] });
    } finally {
      closeSync(out);
      closeSync(theirs);
    }
    this.child = child;
    this.sock = mine;
    this.ready = false;
    this.spawnedAt = Date.now();
    child.on('message', (m: unknown) => this.onMessage(child, m));
    child.once('exit', (code, signal) => this.onExit(child, code, signal));
    child.once('error', (e) => this.log.error({ err: errorMessage(e) }, 'cannot start the shared metadata proxy'));
    return new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => {
        this.readyWaiters = this.readyWaiters.filter((w) => w !== waiter);
        reject(new SharedProxyError('timeout', `shared metadata proxy not ready within ${READY_TIMEOUT_MS} ms; see ${this.logFile}`));
      }, READY_TIMEOUT_MS);
      const waiter = {
        resolve: () => {
          clearTimeout(t);
          resolve();
        },
        reject: (e: Error) => {
          clearTimeout(t);
          reject(e);
        },
      };
      this.readyWaiters.push(waiter);
    });
  }

  private sendIpc(m: AgentMessage): void {
    const c = this.child;
    if (!c?.connected) return;
    try {
      c.send(m);
    } catch (e) {
      this.log.warn({ err: errorMessage(e) }, 'cannot send to the shared metadata proxy');
    }
  }

  private onMessage(child: ChildProcess, raw: unknown): void {
    if (child !== this.child) return;
    const m: ProxyMessage | undefined = parseProxyMessage(raw);
    if (!m) return; // e.g. the start-up error notice of daemon.ts; the exit says the rest
    switch (m.op) {
      case 'ready': {
        this.ready = true;
        this.log.info({ pid: m.pid, listeners: this.entries.size }, 'shared metadata proxy ready');
        // Everything this agent serves goes to the new process (after a respawn: again).
        this.inflight.clear();
        this.queue = [...this.entries.values()];
        for (const w of this.readyWaiters.splice(0)) w.resolve();
        this.pump();
        return;
      }
      case 'added': {
        this.inflight.delete(m.tag);
        const e = this.entries.get(m.tag);
        if (e) {
          e.served = true;
          for (const w of e.waiters.splice(0)) w.resolve();
        }
        this.pump();
        return;
      }
      case 'error': {
        if (m.tag === undefined) {
          this.log.error({ err: m.message }, 'shared metadata proxy error');
          return;
        }
        this.inflight.delete(m.tag);
        const e = this.entries.get(m.tag);
        this.log.error({ tag: m.tag, err: m.message }, 'the shared metadata proxy refused a listener');
        if (e) {
          this.entries.delete(m.tag);
          this.closeEntry(e, new SharedProxyError('refused', `metadata listener ${m.tag}: ${m.message}`));
        }
        this.pump();
        return;
      }
      case 'removed': {
        const list = this.removeWaiters.get(m.tag);
        this.removeWaiters.delete(m.tag);
        for (const r of list ?? []) r();
        return;
      }
      case 'status': {
        const w = this.statusWaiters.shift();
        w?.resolve({ listeners: m.listeners, pending: m.pending, guests: m.guests, responses: m.responses });
        return;
      }
    }
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (child !== this.child) return;
    this.child = undefined;
    this.ready = false;
    this.closeOwn();
    this.inflight.clear();
    for (const e of this.entries.values()) e.served = false;
    // Its sockets died with it: removals are done, status has no answer.
    for (const list of this.removeWaiters.values()) for (const r of list) r();
    this.removeWaiters.clear();
    for (const w of this.statusWaiters.splice(0)) w.reject(new SharedProxyError('not-running', 'the shared metadata proxy exited'));
    for (const w of this.readyWaiters.splice(0)) w.reject(new SharedProxyError('not-running', `the shared metadata proxy exited during start-up (${code ?? signal}); see ${this.logFile}`));
    if (this.stopped) return;
    const lived = Date.now() - this.spawnedAt;
    this.backoffMs = lived < 1000 ? Math.min(10_000, Math.max(200, this.backoffMs * 2)) : 0;
    const delay = Math.max(this.o.respawnDelayMs ?? 0, this.backoffMs);
    this.log.error({ pid: child.pid, code, signal, listeners: this.entries.size, respawn_in_ms: delay }, 'shared metadata proxy died; respawning it (its sockets stay open here, new guest connections wait)');
    this.respawnTimer = setTimeout(() => {
      this.respawnTimer = undefined;
      if (this.stopped) return;
      this.respawnCount++;
      this.spawnProxy().catch((e: unknown) => this.log.error({ err: errorMessage(e) }, 'shared metadata proxy respawn failed'));
    }, delay);
  }

  private closeOwn(): void {
    if (this.sock === undefined) return;
    try {
      closeSync(this.sock);
    } catch {
      /* closed */
    }
    this.sock = undefined;
  }

  private clearTimers(): void {
    if (this.respawnTimer) clearTimeout(this.respawnTimer);
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    this.respawnTimer = undefined;
    this.pruneTimer = undefined;
  }

  // ---- adoption ----

  /** Is `pid` a shared proxy of this agent and state path (not a recycled pid)? */
  private isOurProxy(pid: number): boolean {
    if (!pidAlive(pid)) return false;
    let args: string[];
    try {
      args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      return false;
    }
    return args.includes('--shared') && args.includes(`--shared_name=${this.name}`) && args.includes(`--state_path=${this.statePath}`);
  }

  /**
   * A running shared proxy of this agent: take its sockets (pidfd_getfd), which fills `entries`; returns its
   * pid, to be stopped once the new proxy serves them. If they cannot be taken, stop it and bind anew.
   */
  private async adopt(): Promise<number | undefined> {
    let st: SharedProxyState | undefined;
    try {
      st = parseSharedState(readFileSync(this.stateFile, 'utf8'));
    } catch {
      return undefined;
    }
    if (!st || !this.isOurProxy(st.pid)) {
      if (st) this.log.info({ pid: st.pid }, 'stale shared metadata proxy state: the process is gone');
      rmSync(this.stateFile, { force: true });
      return undefined;
    }
    const taken: Entry[] = [];
    let failure: unknown;
    for (const l of st.listeners) {
      const slot = tagSlot(l.tag);
      const spec: SharedListener = { kind: l.kind, id: l.id, namespace: l.namespace, host: l.host, port: l.port, ...(slot ? { slot } : {}) };
      const want = l.namespace ? this.namespaceInode(l.namespace) : 0;
      if (want === undefined) {
        this.log.warn({ tag: l.tag, namespace: l.namespace }, 'namespace gone: not adopting its metadata listener');
        continue;
      }
      let fd: number;
      try {
        fd = this.netns.pidfdGetfd(st.pid, l.fd);
      } catch (e) {
        failure = e;
        break;
      }
      let ok = this.netns.listeningPort(fd) === l.port;
      let nsInode = 0;
      if (ok && l.namespace) {
        nsInode = this.netns.socketNetnsInode(fd);
        ok = nsInode === want;
      }
      if (!ok) {
        this.log.warn({ tag: l.tag, fd: l.fd }, 'adopted descriptor is not that listener: binding anew');
        this.netns.closeFd(fd);
        const e = this.tryBind(spec);
        if (e) taken.push(e);
        continue;
      }
      taken.push({ spec, tag: specTag(spec), fd, nsInode, served: false, waiters: [] });
    }
    if (failure === undefined && this.o.adopt !== 'rebind') {
      for (const e of taken) this.entries.set(e.tag, e);
      this.log.info({ pid: st.pid, listeners: taken.length }, 'adopting the running shared metadata proxy\'s sockets');
      return st.pid;
    }
    // No pidfd_getfd (kernel < 5.6, no ptrace rights) or asked not to: stop it, then bind the same listeners
    // again. Guests connecting between its close and our bind are refused.
    for (const e of taken) this.netns.closeFd(e.fd);
    this.log.warn({ pid: st.pid, listeners: st.listeners.length, why: failure === undefined ? 'adopt = rebind' : errorMessage(failure) }, 'cannot take the running shared metadata proxy\'s sockets: stopping it and binding anew (connections in the gap are refused)');
    this.retire(st.pid);
    for (const l of st.listeners) {
      const slot = tagSlot(l.tag);
      const spec: SharedListener = { kind: l.kind, id: l.id, namespace: l.namespace, host: l.host, port: l.port, ...(slot ? { slot } : {}) };
      if (l.namespace && this.namespaceInode(l.namespace) === undefined) continue;
      const deadline = Date.now() + STOP_GRACE_MS;
      for (;;) {
        try {
          const e = this.bind(spec);
          this.entries.set(e.tag, e);
          break;
        } catch (err) {
          // The old proxy closes its listening sockets on SIGTERM, a moment after.
          if (!(err instanceof SharedProxyError && err.code === 'EADDRINUSE') || Date.now() > deadline) {
            this.log.error({ tag: l.tag, err: errorMessage(err) }, 'cannot bind a listener of the old proxy again');
            break;
          }
          await sleep(10);
        }
      }
    }
    return undefined;
  }

  private tryBind(spec: SharedListener): Entry | undefined {
    try {
      return this.bind(spec);
    } catch (e) {
      this.log.error({ tag: specTag(spec), err: errorMessage(e) }, 'cannot bind a listener');
      return undefined;
    }
  }

  /** SIGTERM an adopted proxy now; SIGKILL it if it still runs after its longest drain. */
  private retire(pid: number): void {
    this.retiring = pid;
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      return;
    }
    const deadline = Date.now() + 40_000;
    const check = setInterval(() => {
      if (!pidAlive(pid)) {
        clearInterval(check);
        if (this.retiring === pid) this.retiring = undefined;
        this.log.info({ pid }, 'old shared metadata proxy exited');
      } else if (Date.now() > deadline) {
        clearInterval(check);
        this.log.warn({ pid }, 'old shared metadata proxy still running after 40 s: SIGKILL');
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }, 50);
    check.unref();
  }

  /** SIGTERM, up to STOP_GRACE_MS, then SIGKILL; resolves when the process is gone. */
  private async terminate(pid: number): Promise<void> {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      return;
    }
    const deadline = Date.now() + STOP_GRACE_MS;
    while (pidAlive(pid) && Date.now() < deadline) await sleep(20);
    if (pidAlive(pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      const d2 = Date.now() + 2000;
      while (pidAlive(pid) && Date.now() < d2) await sleep(20);
    }
  }
}
