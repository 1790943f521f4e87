// Which agent a qrouter-/qdhcp- namespace belongs to, machine-wide. On a real network node one agent builds
// each namespace; with several agents on one machine (network nodes stood in for by distinct `host`s) a router
// that failed over from a dead agent is rebuilt under the same name by the live one, and the dead one, back,
// must not tear it down. One small file per namespace under /run (tmpfs, gone with the namespaces at reboot),
// so claiming is O(1) however many routers an agent has.
import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const NS_OWNER_DIR = process.env.QM_NS_OWNER_DIR ?? '/run/quantum/netns-owners';

export interface NsOwner {
  /** The agent's host option. */
  host: string;
  /** Its binary (quantum-l3-agent, quantum-dhcp-agent). */
  binary: string;
  /** Its state_path: two agents on one host still differ there. */
  state_path: string;
}

const same = (a: NsOwner, b: NsOwner) => a.host === b.host && a.binary === b.binary && a.state_path === b.state_path;

export class NamespaceOwners {
  constructor(
    readonly me: NsOwner,
    private readonly dir = NS_OWNER_DIR,
  ) {}

  private file(ns: string): string {
    return join(this.dir, ns);
  }

  /** Record that we build (or took over) this namespace. */
  claim(ns: string): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    const f = this.file(ns);
    writeFileSync(`${f}.${process.pid}.tmp`, `${JSON.stringify(this.me)}\n`);
    renameSync(`${f}.${process.pid}.tmp`, f);
  }

  owner(ns: string): NsOwner | undefined {
    try {
      const j = JSON.parse(readFileSync(this.file(ns), 'utf8')) as Partial<NsOwner>;
      if (typeof j.host === 'string' && typeof j.binary === 'string' && typeof j.state_path === 'string') return { host: j.host, binary: j.binary, state_path: j.state_path };
    } catch {
      /* none or unreadable */
    }
    return undefined;
  }

  /** Ours, or claimed by nobody (namespaces made before this registry existed count as ours to manage). */
  mine(ns: string): boolean {
    const o = this.owner(ns);
    return !o || same(o, this.me);
  }

  /** Someone else has claimed it since. */
  takenOver(ns: string): boolean {
    const o = this.owner(ns);
    return !!o && !same(o, this.me);
  }

  /** Drop our claim (another agent's claim is left alone). */
  release(ns: string): void {
    if (this.owner(ns) && !this.mine(ns)) return;
    rmSync(this.file(ns), { force: true });
  }

  /** Namespaces with our claim whose name starts with prefix (present or not: a proxy may outlive its namespace). */
  claimed(prefix: string): string[] {
    let names: string[];
    try {
      names = readdirSync(this.dir).filter((n) => n.startsWith(prefix) && !n.endsWith('.tmp'));
    } catch {
      return [];
    }
    const out: string[] = [];
    for (const ns of names) {
      const o = this.owner(ns);
      if (o && same(o, this.me)) out.push(ns);
    }
    return out;
  }
}
