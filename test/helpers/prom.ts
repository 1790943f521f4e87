// Reading Prometheus text exposition in tests.
import { httpGet } from './proc.js';

/** One sample's value from the exposition text (labels must match those given), or undefined. */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return undefined;
}

export async function scrape(port: number): Promise<string> {
  const r = await httpGet(`http://127.0.0.1:${port}/metrics`);
  if (r.status !== 200) throw new Error(`scrape: ${r.status}`);
  return r.body;
}
