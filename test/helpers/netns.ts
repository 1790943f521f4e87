// Real namespaces, bridges and guests for tests, each named with a per-run prefix (or a random uuid) and
// registered here, so after() removes every one of them even when the test failed half-way. Processes are
// ended by pid only: those we spawned, those named in pid files under our state paths, and those living in
// namespaces we own (`ip netns pids`).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NS_OWNER_DIR } from '../../src/linux/ns-owner.js';

/** Run a command synchronously; returns stdout, throws with stderr on failure. */
export function sh(argv: string[], input?: string): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', input: input ?? '' });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}`);
  return r.stdout;
}

/** Run inside a namespace. */
export const nsExec = (ns: string, argv: string[], input?: string) => sh(['ip', 'netns', 'exec', ns, ...argv], input);

export function listNamespaces(): string[] {
  return sh(['ip', 'netns', 'list'])
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n !== '');
}

export function linkExistsSync(dev: string, ns?: string): boolean {
  const argv = ns ? ['ip', 'netns', 'exec', ns, 'ip', 'link', 'show', 'dev', dev] : ['ip', 'link', 'show', 'dev', dev];
  return spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' }).status === 0;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Is the process gone (or a zombie waiting to be reaped)? */
export function processGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const st = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return st === 'Z' || st === 'X';
  } catch {
    return true;
  }
}

/** A one-line node HTTP server inside a namespace answering `body` (its pid is tracked by the fixture). */
export function httpServerScript(host: string, port: number, body: string): string {
  return `require('http').createServer((q, s) => s.end(${JSON.stringify(body)})).listen(${port}, ${JSON.stringify(host)})`;
}

export interface Guest {
  ns: string;
  device: string;
  rootDevice: string;
}

export class NetFixture {
  /** Short per-run prefix (≤ 7 chars) for things tests name themselves. */
  readonly prefix = `qt${randomBytes(2).toString('hex')}`;
  private readonly namespaces = new Set<string>();
  private readonly links = new Set<string>();
  private readonly bridges = new Set<string>();
  private readonly pids = new Set<number>();
  private readonly statePaths = new Set<string>();
  private readonly etcNetns = new Set<string>();
  private guests = 0;

  trackNamespace(ns: string): string {
    this.namespaces.add(ns);
    return ns;
  }
  trackLink(dev: string): string {
    this.links.add(dev);
    return dev;
  }
  trackBridge(br: string): string {
    this.bridges.add(br);
    return br;
  }
  trackPid(pid: number): void {
    this.pids.add(pid);
  }

  /** Start a small HTTP server in a namespace; resolves once it answers. */
  async httpServer(ns: string, host: string, port: number, body: string): Promise<number> {
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', httpServerScript(host, port, body)], { stdio: 'ignore', detached: true });
    child.unref();
    this.trackPid(child.pid!);
    const end = Date.now() + 5000;
    while (Date.now() < end) {
      const r = spawnSync('ip', ['netns', 'exec', ns, 'curl', '-s', '-m', '1', `http://${host}:${port}/`], { encoding: 'utf8' });
      if (r.status === 0 && r.stdout === body) return child.pid!;
      await new Promise((res) => setTimeout(res, 50));
    }
    throw new Error(`server in ${ns} at ${host}:${port} did not come up`);
  }

  /** A fresh state_path under /tmp, world-traversable (dnsmasq re-reads its files as an unprivileged user). */
  statePath(): string {
    const d = mkdtempSync(join(tmpdir(), `${this.prefix}-state-`));
    chmodSync(d, 0o755);
    this.statePaths.add(d);
    return d;
  }

  /** A namespace with lo up, tracked. */
  namespace(name: string): string {
    this.trackNamespace(name);
    sh(['ip', 'netns', 'add', name]);
    nsExec(name, ['ip', 'link', 'set', 'lo', 'up']);
    return name;
  }

  /**
   * A guest: namespace <prefix>-g<n> with its own /etc/netns/<ns>/resolv.conf, eth0 (given MAC) plugged by a
   * veth into `bridge`; a static address + default route when `cidr` is given.
   */
  guest(o: { bridge: string; mac: string; cidr?: string; gateway?: string }): Guest {
    const n = ++this.guests;
    const ns = this.namespace(`${this.prefix}-g${n}`);
    const etc = `/etc/netns/${ns}`;
    this.etcNetns.add(etc);
    mkdirSync(etc, { recursive: true });
    writeFileSync(join(etc, 'resolv.conf'), '# guest resolv.conf\n');
    const rootDevice = this.trackLink(`${this.prefix}g${n}`);
    if (!linkExistsSync(o.bridge)) {
      this.trackBridge(o.bridge);
      // An agent plugging its port at the same moment may create the bridge first: that is fine.
      const r = spawnSync('ip', ['link', 'add', o.bridge, 'type', 'bridge'], { encoding: 'utf8' });
      if (r.status !== 0 && !linkExistsSync(o.bridge)) throw new Error(`ip link add ${o.bridge} type bridge failed: ${r.stderr}`);
      sh(['ip', 'link', 'set', o.bridge, 'up']);
    }
    sh(['ip', 'link', 'add', rootDevice, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    sh(['ip', 'link', 'set', rootDevice, 'master', o.bridge, 'up']);
    nsExec(ns, ['ip', 'link', 'set', 'eth0', 'address', o.mac]);
    nsExec(ns, ['ip', 'link', 'set', 'eth0', 'up']);
    if (o.cidr) nsExec(ns, ['ip', 'addr', 'add', o.cidr, 'dev', 'eth0']);
    if (o.gateway) nsExec(ns, ['ip', 'route', 'add', 'default', 'via', o.gateway]);
    return { ns, device: 'eth0', rootDevice };
  }

  private killPid(pid: number): void {
    if (!alive(pid)) return;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }

  /**
   * Pids named by pid files under a state path (external/pids/<uuid>.pid, dhcp/<net>/pid), kept only when the
   * process's command line holds that uuid, so a recycled pid is never hit.
   */
  pidsFromStatePath(dir: string): number[] {
    const files: string[] = [];
    const walk = (d: string) => {
      let ents;
      try {
        ents = readdirSync(d, { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of ents) {
        const p = join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (/(^pid$)|(\.pid(\.[\w-]+)?$)/.test(e.name)) files.push(p);
      }
    };
    walk(dir);
    const pids: number[] = [];
    for (const f of files) {
      let n: number;
      try {
        n = Number.parseInt(readFileSync(f, 'utf8').trim(), 10);
      } catch {
        continue;
      }
      if (!Number.isInteger(n) || n <= 1 || n === process.pid) continue;
      const parts = f.split('/');
      const base = parts[parts.length - 1]!;
      const uuid = base === 'pid' ? parts[parts.length - 2]! : base.split('.pid')[0]!;
      let cmd = '';
      try {
        cmd = readFileSync(`/proc/${n}/cmdline`, 'utf8').split('\0').join(' ');
      } catch {
        continue;
      }
      if (cmd.includes(uuid)) pids.push(n);
    }
    return pids;
  }

  /** Remove everything registered. Never throws: cleanup must run to the end. */
  cleanup(): void {
    const errs: string[] = [];
    const attempt = (f: () => void) => {
      try {
        f();
      } catch (e) {
        errs.push((e as Error).message);
      }
    };
    for (const pid of this.pids) attempt(() => this.killPid(pid));
    for (const d of this.statePaths) for (const pid of this.pidsFromStatePath(d)) attempt(() => this.killPid(pid));
    const present = new Set(listNamespaces());
    for (const ns of this.namespaces) {
      if (!present.has(ns)) continue;
      attempt(() => {
        for (const p of execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split('\n').filter(Boolean)) this.killPid(Number(p));
      });
      // Delete the devices first: namespace teardown is asynchronous, and veth peers would linger a moment.
      attempt(() => {
        const links = JSON.parse(nsExec(ns, ['ip', '-j', 'link', 'show'])) as { ifname: string }[];
        for (const l of links) if (l.ifname !== 'lo') spawnSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'del', l.ifname]);
      });
      attempt(() => sh(['ip', 'netns', 'delete', ns]));
    }
    // The agents' claims on the namespaces (src/linux/ns-owner.ts), machine-wide under /run.
    for (const ns of this.namespaces) attempt(() => rmSync(join(NS_OWNER_DIR, ns), { force: true }));
    for (const dev of this.links) if (linkExistsSync(dev)) attempt(() => sh(['ip', 'link', 'del', dev]));
    for (const br of this.bridges) if (linkExistsSync(br)) attempt(() => sh(['ip', 'link', 'del', br]));
    for (const d of this.etcNetns) attempt(() => rmSync(d, { recursive: true, force: true }));
    for (const d of this.statePaths) if (existsSync(d)) attempt(() => rmSync(d, { recursive: true, force: true }));
    if (errs.length) process.stderr.write(`netns fixture cleanup: ${errs.join('; ')}\n`);
  }
}

/** A random uuid, so qrouter-/qdhcp-/brq names are unique per run. */
export { randomUUID as uuid } from 'node:crypto';
