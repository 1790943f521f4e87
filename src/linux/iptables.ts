// An IptablesManager in the manner of neutron/agent/linux/iptables_manager.py: the agent declares chains and
// rules in memory; apply() reads the namespace's tables with iptables-save, replaces everything carrying our
// wrap name (chains `<wrap>-X`, the jumps into them) with the declared set, and writes the tables back in one
// iptables-restore, so a namespace never sees half a rule set and rules owned by others are kept.
import type { Logger } from '../common/log.js';
import { execute } from './exec.js';

export type TableName = 'filter' | 'nat' | 'mangle' | 'raw';

export const BUILTIN_CHAINS: Record<TableName, readonly string[]> = {
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
  raw: ['PREROUTING', 'OUTPUT'],
};

// Neutron wraps these builtin chains per table (nat INPUT is left alone there too).
const WRAPPED_BUILTINS: Record<TableName, readonly string[]> = {
  filter: ['INPUT', 'OUTPUT', 'FORWARD'],
  nat: ['PREROUTING', 'OUTPUT', 'POSTROUTING'],
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
  raw: ['PREROUTING', 'OUTPUT'],
};

/** Neutron: binary name truncated to 16 characters. */
export function wrapNameFor(binary: string): string {
  return binary.slice(0, 16).replace(/ /g, '_');
}

interface Rule {
  chain: string;
  rule: string;
  wrap: boolean;
  top: boolean;
}

export class IptablesTable {
  /** Wrapped chain names without the prefix (builtins included). */
  readonly chains = new Set<string>();
  readonly rules: Rule[] = [];
  constructor(
    readonly name: TableName,
    readonly wrapName: string,
  ) {
    for (const c of WRAPPED_BUILTINS[name]) this.chains.add(c);
  }

  addChain(name: string): void {
    this.chains.add(name);
  }

  removeChain(name: string): void {
    this.chains.delete(name);
    const target = `${this.wrapName}-${name}`;
    for (let i = this.rules.length - 1; i >= 0; i--) {
      const r = this.rules[i]!;
      if ((r.wrap && r.chain === name) || this.expand(r.rule).includes(`-j ${target}`)) this.rules.splice(i, 1);
    }
  }

  /** `$name` in a rule means our wrapped chain `<wrap>-name` (as Neutron writes `-j $scope`). */
  private expand(rule: string): string {
    return rule.replace(/\$([A-Za-z0-9_-]+)/g, (_, c: string) => `${this.wrapName}-${c}`);
  }

  addRule(chain: string, rule: string, opts: { wrap?: boolean; top?: boolean } = {}): void {
    const wrap = opts.wrap ?? true;
    if (wrap && !this.chains.has(chain)) throw new Error(`unknown chain ${chain} in table ${this.name}`);
    const r = { chain, rule: this.expand(rule), wrap, top: opts.top ?? false };
    if (!this.rules.some((x) => x.chain === r.chain && x.rule === r.rule && x.wrap === r.wrap)) this.rules.push(r);
  }

  removeRule(chain: string, rule: string, opts: { wrap?: boolean } = {}): void {
    const wrap = opts.wrap ?? true;
    const text = this.expand(rule);
    const i = this.rules.findIndex((x) => x.chain === chain && x.rule === text && x.wrap === wrap);
    if (i >= 0) this.rules.splice(i, 1);
  }

  emptyChain(chain: string): void {
    for (let i = this.rules.length - 1; i >= 0; i--) if (this.rules[i]!.chain === chain && this.rules[i]!.wrap) this.rules.splice(i, 1);
  }

  /** Drop everything we declared (builtin wrapped chains stay, empty). */
  clear(): void {
    this.rules.length = 0;
    this.chains.clear();
    for (const c of WRAPPED_BUILTINS[this.name]) this.chains.add(c);
  }

  /** The lines this table contributes, as iptables-save prints them. */
  ourLines(): { decls: string[]; jumps: Map<string, string[]>; rules: string[] } {
    const w = this.wrapName;
    const decls = [...this.chains].sort().map((c) => `:${w}-${c} - [0:0]`);
    const jumps = new Map<string, string[]>();
    for (const b of WRAPPED_BUILTINS[this.name]) if (this.chains.has(b)) jumps.set(b, [`-A ${b} -j ${w}-${b}`]);
    const rules: string[] = [];
    const order = [...this.rules.filter((r) => r.top), ...this.rules.filter((r) => !r.top)];
    for (const r of order) {
      const chain = r.wrap ? `${w}-${r.chain}` : r.chain;
      if (r.wrap) rules.push(`-A ${chain} ${r.rule}`);
      else {
        // Unwrapped rules on builtin chains go right after our jump, like Neutron's top rules.
        const list = jumps.get(r.chain) ?? [];
        list.push(`-A ${chain} ${r.rule}`);
        jumps.set(r.chain, list);
      }
    }
    return { decls, jumps, rules };
  }
}

/**
 * Whether the kernel's tables (iptables-save text) already hold what a restore input would write, table by table:
 * the same chains with the same policies, and in each chain the same rules in the same order (iptables-save
 * prints chains in its own order, and counters differ).
 */
export function sameTables(saved: string, input: string, tables: readonly string[]): boolean {
  const a = parseSave(saved);
  const b = parseSave(input);
  const shape = (t: SavedTable | undefined): string => {
    if (!t) return '';
    const decls = t.decls.map((d) => d.replace(/\s*\[\d+:\d+\]$/, '')).sort();
    const byChain = new Map<string, string[]>();
    for (const r of t.rules) {
      const chain = r.split(/\s+/)[1] ?? '';
      byChain.set(chain, [...(byChain.get(chain) ?? []), r]);
    }
    return JSON.stringify([decls, [...byChain].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))]);
  };
  return tables.every((t) => a.has(t) && shape(a.get(t)) === shape(b.get(t)));
}

interface SavedTable {
  decls: string[];
  rules: string[];
}

/** Parse iptables-save output into tables of chain declarations and rules (comments dropped). */
export function parseSave(text: string): Map<string, SavedTable> {
  const tables = new Map<string, SavedTable>();
  let cur: SavedTable | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      cur = { decls: [], rules: [] };
      tables.set(line.slice(1), cur);
    } else if (line === 'COMMIT') cur = undefined;
    else if (cur && line.startsWith(':')) cur.decls.push(line);
    else if (cur) cur.rules.push(line);
  }
  return tables;
}

export interface IptablesManagerOptions {
  /** Namespace to manage (root namespace when absent). */
  namespace?: string | undefined;
  /** The agent's binary name, e.g. quantum-l3-agent; chains are named <binary[:16]>-<chain>. */
  binaryName: string;
  log?: Logger;
  tables?: readonly TableName[];
}

const tablesOf = (wrap: string): Record<TableName, IptablesTable> => ({
  filter: new IptablesTable('filter', wrap),
  nat: new IptablesTable('nat', wrap),
  mangle: new IptablesTable('mangle', wrap),
  raw: new IptablesTable('raw', wrap),
});

export class IptablesManager {
  readonly wrapName: string;
  readonly ipv4: Record<TableName, IptablesTable>;
  /** ip6tables, applied only once something is declared there (a router with IPv6 interfaces). */
  readonly ipv6: Record<TableName, IptablesTable>;
  private readonly tableNames: readonly TableName[];
  private v6Applied = false;
  constructor(private readonly o: IptablesManagerOptions) {
    this.wrapName = wrapNameFor(o.binaryName);
    this.tableNames = o.tables ?? ['filter', 'nat', 'mangle'];
    this.ipv4 = tablesOf(this.wrapName);
    this.ipv6 = tablesOf(this.wrapName);
  }

  private get v6Declared(): boolean {
    return this.tableNames.some((t) => this.ipv6[t].rules.length > 0 || this.ipv6[t].chains.size > WRAPPED_BUILTINS[t].length);
  }

  /** Render the restore input for our tables from the current iptables-save text (pure, for tests too). */
  render(saved: string, family: 4 | 6 = 4): string {
    const tables = family === 4 ? this.ipv4 : this.ipv6;
    const current = parseSave(saved);
    const w = `${this.wrapName}-`;
    const out: string[] = [];
    for (const t of this.tableNames) {
      const table = tables[t];
      const cur = current.get(t) ?? { decls: BUILTIN_CHAINS[t].map((c) => `:${c} ACCEPT [0:0]`), rules: [] };
      const ours = table.ourLines();
      const keptDecls = cur.decls.filter((d) => !d.startsWith(`:${w}`));
      const keptRules = cur.rules.filter((r) => {
        const chain = r.split(/\s+/)[1] ?? '';
        if (chain.startsWith(w)) return false;
        if (r.includes(` -j ${w}`) || r.includes(` -g ${w}`)) return false;
        return !ours.jumps.get(chain)?.includes(r);
      });
      out.push(`*${t}`, ...keptDecls.map((d) => d.replace(/\[\d+:\d+\]$/, '[0:0]')), ...ours.decls);
      // Our jumps go first in each builtin chain; then whatever else was there; then our own chains.
      const builtins = new Set(BUILTIN_CHAINS[t]);
      for (const [chain, lines] of ours.jumps) if (builtins.has(chain)) out.push(...lines);
      out.push(...keptRules, ...ours.rules, 'COMMIT');
    }
    return `${out.join('\n')}\n`;
  }

  /**
   * Make the kernel's tables match what is declared, atomically (one iptables-restore for all our tables).
   * `fresh`: the namespace was just made, so its tables are known to be empty and need not be read first.
   */
  async apply(opts: { fresh?: boolean } = {}): Promise<void> {
    const saved = opts.fresh ? '' : await execute(['iptables-save'], { netns: this.o.namespace, log: this.o.log });
    const input = this.render(saved);
    // Tables already as declared (an adopted namespace: agent restart, failover on this machine) are not written
    // again: a restore would change nothing but cost a process per router.
    if (opts.fresh || !sameTables(saved, input, this.tableNames)) await execute(['iptables-restore'], { netns: this.o.namespace, input, log: this.o.log });
    // IPv6 once declared, and once more when it no longer is (to take the rules out).
    if (this.v6Declared || this.v6Applied) {
      const fresh6 = opts.fresh && !this.v6Applied;
      const saved6 = fresh6 ? '' : await execute(['ip6tables-save'], { netns: this.o.namespace, log: this.o.log });
      const input6 = this.render(saved6, 6);
      if (fresh6 || !sameTables(saved6, input6, this.tableNames)) await execute(['ip6tables-restore'], { netns: this.o.namespace, input: input6, log: this.o.log });
      this.v6Applied = this.v6Declared;
    }
  }

  /** Remove every chain and rule we own from the namespace. */
  async clearAll(): Promise<void> {
    const saved = await execute(['iptables-save'], { netns: this.o.namespace, log: this.o.log });
    const w = `${this.wrapName}-`;
    const current = parseSave(saved);
    const out: string[] = [];
    for (const [t, cur] of current) {
      if (!cur.decls.some((d) => d.startsWith(`:${w}`))) continue;
      out.push(`*${t}`, ...cur.decls.filter((d) => !d.startsWith(`:${w}`)).map((d) => d.replace(/\[\d+:\d+\]$/, '[0:0]')));
      out.push(...cur.rules.filter((r) => !(r.split(/\s+/)[1] ?? '').startsWith(w) && !r.includes(` -j ${w}`) && !r.includes(` -g ${w}`)), 'COMMIT');
    }
    for (const t of [...Object.values(this.ipv4), ...Object.values(this.ipv6)]) t.clear();
    if (out.length) await execute(['iptables-restore'], { netns: this.o.namespace, input: `${out.join('\n')}\n`, log: this.o.log });
  }

  /** iptables-save (ip6tables-save) of one table, as rule lines (`-A ...`), for inspection and tests. */
  static async readRules(table: TableName, namespace?: string, log?: Logger, family: 4 | 6 = 4): Promise<string[]> {
    const saved = await execute([family === 4 ? 'iptables-save' : 'ip6tables-save', '-t', table], { netns: namespace, log });
    return parseSave(saved).get(table)?.rules ?? [];
  }
}
