// Typed access to the qm_netns addon (src/linux/native/netns.c, built into dist/native/qm_netns.node by
// `npm run build`): listening sockets created inside a network namespace without a process there, and
// descriptors passed between processes. Used by the agents' SharedMetadataProxy and by the shared proxy
// itself, so it must load from both builds (ES modules in dist/src, CommonJS in dist/proxy): no import.meta.
import { closeSync, existsSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/** Where `ip netns add` puts a namespace's handle. */
export const NETNS_RUN_DIR = '/run/netns';
export const netnsPath = (name: string): string => join(NETNS_RUN_DIR, name);

export const NATIVE_ADDON = 'qm_netns.node';

export interface NetnsSocket {
  /** A listening TCP socket (close-on-exec) created inside `nsPath` (null: this thread's namespace); `host` may be
   * scoped (fe80::a9fe:a9fe%tap0): the device is looked up inside the namespace. */
  listenInNamespace(nsPath: string | null, host: string, port: number, backlog: number, opts?: { freebind?: boolean }): number;
  /** An AF_UNIX SOCK_SEQPACKET pair, close-on-exec. */
  socketpair(): [number, number];
  /** One message: `tag` as data, `fds` as SCM_RIGHTS; never blocks (EAGAIN is thrown). */
  sendFds(sock: number, tag: string, fds: readonly number[]): void;
  /** The next message, or null when none is queued; the descriptors arrive close-on-exec. */
  recvFds(sock: number): { tag: string; fds: number[] } | null;
  /** A copy of process `pid`'s descriptor `fd` (pidfd_getfd; needs ptrace rights over it, e.g. root). */
  pidfdGetfd(pid: number, fd: number): number;
  /** The local port of a listening TCP socket, or null when `fd` is not one. */
  listeningPort(fd: number): number | null;
  /** The inode of the network namespace a socket belongs to (stat(/run/netns/<name>).ino of the same one). */
  socketNetnsInode(fd: number): number;
  /** A TCP connection made from inside `nsPath`, with SO_MARK `mark` when > 0 (blocking, at most 5 s). */
  connectInNamespace(nsPath: string | null, host: string, port: number, mark: number): number;
  /** Write a net.* sysctl as seen inside `nsPath` (no process: setns on this thread and back). */
  sysctlInNamespace(nsPath: string, key: string, value: string): void;
  /** Run a command to its end on a thread of its own (posix_spawn, no fork of node), born inside `nsPath` when
   * given; rejects with an ErrnoException when it cannot start (ENOENT...). With `outputFd` (held open by the caller
   * until it settles) stdout and stderr go there, stdin is /dev/null, and it settles at the command's exit: a
   * daemon's launcher. */
  spawnCommand(argv: readonly string[], nsPath: string | null, input: string, timeoutMs: number, opts?: { outputFd?: number; setsid?: boolean }): Promise<SpawnResult>;
  closeFd(fd: number): void;
}

export interface SpawnResult {
  stdout: string;
  stderr: string;
  exitCode: number | null;
  /** SIGKILL... when the command died of a signal. */
  signal: string | null;
  /** Killed after timeoutMs. */
  timedOut: boolean;
}

/** The addon is missing or does not load: `npm run build` compiles it (gcc and libc6-dev needed). */
export class NativeAddonError extends Error {
  readonly status = 'native-addon-missing';
  constructor(
    readonly path: string | undefined,
    why: string,
  ) {
    super(`qm_netns addon ${path ? `(${path}) ` : ''}not usable: ${why}; run \`npm run build\` (needs gcc and libc6-dev, which install.sh installs)`);
    this.name = 'NativeAddonError';
  }
}

/** What the addon throws: node's ErrnoException shape (code = errno name, syscall). */
export function isErrno(e: unknown): e is NodeJS.ErrnoException & { code: string; syscall: string } {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).code === 'string';
}

/** dist/native/qm_netns.node, found upwards from this module (CommonJS) or from the main script (ES modules). */
function findAddon(): string | undefined {
  let d: string;
  if (typeof __dirname === 'string') d = __dirname;
  else if (process.argv[1]) d = dirname(realpathSync(process.argv[1]));
  else return undefined;
  for (let i = 0; i < 5; i++) {
    const p = join(d, 'native', NATIVE_ADDON);
    if (existsSync(p)) return p;
    d = dirname(d);
  }
  return undefined;
}

const loaded = new Map<string, NetnsSocket>();

/** Load the addon (once per path). ES module callers pass the path (native-addon.ts). */
export function loadNetnsSocket(path?: string): NetnsSocket {
  const p = path ?? findAddon();
  if (p === undefined) throw new NativeAddonError(undefined, `${NATIVE_ADDON} not found`);
  const hit = loaded.get(p);
  if (hit) return hit;
  if (!existsSync(p)) throw new NativeAddonError(p, 'not built');
  let m: Omit<NetnsSocket, 'closeFd'>;
  try {
    m = createRequire(p)(p) as Omit<NetnsSocket, 'closeFd'>;
  } catch (e) {
    throw new NativeAddonError(p, e instanceof Error ? e.message : String(e));
  }
  const api: NetnsSocket = {
    listenInNamespace: m.listenInNamespace,
    socketpair: m.socketpair,
    sendFds: m.sendFds,
    recvFds: m.recvFds,
    pidfdGetfd: m.pidfdGetfd,
    listeningPort: m.listeningPort,
    socketNetnsInode: m.socketNetnsInode,
    connectInNamespace: m.connectInNamespace,
    sysctlInNamespace: m.sysctlInNamespace,
    spawnCommand: m.spawnCommand,
    closeFd: (fd) => closeSync(fd),
  };
  loaded.set(p, api);
  return api;
}
