// Reads a V8 .cpuprofile (node --cpu-prof) and ranks functions and modules by self time.
import { readFileSync } from 'node:fs';

interface CpuNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: CpuNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
}

export interface Frame {
  name: string;
  where: string;
  selfPct: number;
}

export interface ProfileSummary {
  samples: number;
  topFrames: Frame[];
  /** Inclusive time (the function and everything it called), recursion counted once. */
  topInclusive: Frame[];
  /** Self time grouped by where the code lives (our src/, node internals, a dependency, GC, idle...). */
  byArea: { area: string; selfPct: number }[];
}

function area(url: string, name: string): string {
  if (!url) return name.startsWith('(') ? name : '(native/V8)';
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[0]}`;
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  const src = /\/(src\/[^/]+)\//.exec(url);
  if (src) return src[1]!;
  return url.replace(/^file:\/\//, '');
}

export function summarizeProfile(path: string, top = 15): ProfileSummary {
  const prof = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
  let total = 0;
  const byFrame = new Map<string, Frame & { hits: number }>();
  const byArea = new Map<string, number>();
  for (const n of prof.nodes) {
    const hits = n.hitCount ?? 0;
    if (!hits) continue;
    total += hits;
    const cf = n.callFrame;
    const name = cf.functionName || '(anonymous)';
    const where = cf.url ? `${cf.url.replace(/^file:\/\/.*?\/(dist[^/]*\/|node_modules\/)/, '$1')}:${cf.lineNumber + 1}` : '';
    const key = `${name}@${where}`;
    const f = byFrame.get(key) ?? { name, where, selfPct: 0, hits: 0 };
    f.hits += hits;
    byFrame.set(key, f);
    const a = area(cf.url, name);
    byArea.set(a, (byArea.get(a) ?? 0) + hits);
  }
  const pct = (h: number) => (total ? (100 * h) / total : 0);
  // Inclusive: walk from the root keeping the frames on the current stack, so recursion is counted once.
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const incl = new Map<string, Frame & { hits: number }>();
  const keyOf = (n: CpuNode) => {
    const cf = n.callFrame;
    const where = cf.url ? `${cf.url.replace(/^file:\/\/.*?\/(dist[^/]*\/|node_modules\/)/, '$1')}:${cf.lineNumber + 1}` : '';
    return { key: `${cf.functionName || '(anonymous)'}@${where}`, name: cf.functionName || '(anonymous)', where };
  };
  const subtotal = new Map<number, number>();
  const sum = (n: CpuNode): number => {
    let t = n.hitCount ?? 0;
    for (const c of n.children ?? []) t += sum(byId.get(c)!);
    subtotal.set(n.id, t);
    return t;
  };
  const root = prof.nodes[0]!;
  sum(root);
  const walk = (n: CpuNode, onStack: Set<string>) => {
    const k = keyOf(n);
    const fresh = !onStack.has(k.key);
    if (fresh && n !== root && !k.name.startsWith('(')) {
      const f = incl.get(k.key) ?? { name: k.name, where: k.where, selfPct: 0, hits: 0 };
      f.hits += subtotal.get(n.id)!;
      incl.set(k.key, f);
    }
    if (fresh) onStack.add(k.key);
    for (const c of n.children ?? []) walk(byId.get(c)!, onStack);
    if (fresh) onStack.delete(k.key);
  };
  walk(root, new Set());
  return {
    samples: total,
    topFrames: [...byFrame.values()]
      .sort((a, b) => b.hits - a.hits)
      .slice(0, top)
      .map((f) => ({ name: f.name, where: f.where, selfPct: pct(f.hits) })),
    topInclusive: [...incl.values()]
      .sort((a, b) => b.hits - a.hits)
      .slice(0, top)
      .map((f) => ({ name: f.name, where: f.where, selfPct: pct(f.hits) })),
    byArea: [...byArea.entries()].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([a, h]) => ({ area: a, selfPct: pct(h) })),
  };
}
