// The proxy's behavioural tests run twice: against a per-namespace process (startProxy, as the agents ran
// it until now) and against a listener of a shared process started through SharedMetadataProxy, in the
// root namespace on loopback (nsPath null) so the tests' loopback guests (127.0.0.x) reach it alike.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../src/common/log.js';
import { SharedMetadataProxy } from '../../src/linux/shared-proxy.js';
import { startProxy } from './mdpath.js';

export type ProxyMode = 'per-namespace' | 'shared';
export const PROXY_MODES: readonly ProxyMode[] = ['per-namespace', 'shared'];

/** What the tests need of a running proxy, in either mode. */
export interface RunningProxy {
  /** The proxy process (the shared one's in shared mode). */
  pid: number;
  output(): string;
  /** Per-namespace: SIGTERM the process. Shared: remove the listener (and the process with the last one). */
  stop(): Promise<void>;
}

/** Flags that say which listener (one per router/network); everything else is the process's. */
const LISTENER_FLAG = /^--(router_id|network_id|bind_address|metadata_port)=/;

interface Pooled {
  m: SharedMetadataProxy;
  state: string | undefined;
  users: number;
}

const pool = new Map<string, Pooled>();
let seq = 0;

/** Where a shared-mode listener goes and which process serves it (the defaults: loopback, a pooled process). */
export interface SharedOptions {
  /** The namespace to listen in ('' : the test's own). */
  namespace?: string;
  /** metadata_proxy_cmd: another build's proxy. */
  proxyCmd?: string;
  /** A process of its own, shared with no other call (two listeners of one router may then coexist). */
  ownProcess?: boolean;
}

async function sharedProcess(processFlags: string[], o: SharedOptions): Promise<Pooled> {
  const key = `${o.proxyCmd ?? ''}|${[...processFlags].sort().join(' ')}${o.ownProcess ? `|own-${++seq}` : ''}`;
  const hit = pool.get(key);
  if (hit) return hit;
  let statePath: string | undefined;
  let socket: string | undefined;
  let debug = false;
  const extra: string[] = [];
  for (const f of processFlags) {
    if (f.startsWith('--state_path=')) statePath = f.slice('--state_path='.length);
    else if (f.startsWith('--metadata_proxy_socket=')) socket = f.slice('--metadata_proxy_socket='.length);
    else if (f === '--debug') debug = true;
    else extra.push(f);
  }
  // Its own state directory unless the test gave one (then the default socket is $state_path/metadata_proxy).
  const own = statePath === undefined ? mkdtempSync(join(tmpdir(), 'qm-shared-')) : undefined;
  const m = new SharedMetadataProxy({
    name: `qm-test-${process.pid}-${++seq}`,
    conf: { state_path: statePath ?? own!, metadata_proxy_socket: socket, metadata_proxy_cmd: o.proxyCmd, debug, verbose: false },
    log: silentLogger,
    proxyArgs: extra,
    pruneIntervalSec: 0,
  });
  await m.start();
  const p: Pooled = { m, state: own, users: 0 };
  pool.set(key, p);
  return p;
}

/**
 * Start the proxy for the router or network named in `args`, listening on 0.0.0.0:`port` (or --bind_address).
 * `shared` applies to shared mode only.
 */
export async function startProxyIn(mode: ProxyMode, args: string[], port: number, shared: SharedOptions = {}): Promise<RunningProxy> {
  if (mode === 'per-namespace') return startProxy(args, port);
  const processFlags = args.filter((a) => !LISTENER_FLAG.test(a));
  const val = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const routerId = val('router_id');
  const networkId = val('network_id');
  const kind = routerId ? 'router' : 'network';
  const id = (routerId ?? networkId)!;
  const p = await sharedProcess(processFlags, shared);
  await p.m.add({ kind, id, namespace: shared.namespace ?? '', host: val('bind_address') ?? '0.0.0.0', port });
  p.users++;
  const key = [...pool].find(([, v]) => v === p)![0];
  let stopped = false;
  return {
    pid: p.m.pid!,
    output: () => {
      try {
        return readFileSync(p.m.logFile, 'utf8');
      } catch {
        return '';
      }
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await p.m.remove(kind, id);
      if (--p.users === 0) {
        pool.delete(key);
        await p.m.destroy();
        if (p.state) rmSync(p.state, { recursive: true, force: true });
      }
    },
  };
}
