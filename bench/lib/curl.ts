// One request with curl from inside a namespace (a guest), with its status, headers and body.
import { run } from './exec.js';

export interface CurlAnswer {
  /** HTTP status; 0 when curl got no answer. */
  status: number;
  /** Lower-cased header names, last value wins. */
  headers: Record<string, string>;
  body: string;
}

export async function curl(ns: string | undefined, url: string, o: { method?: string; headers?: Record<string, string> } = {}): Promise<CurlAnswer> {
  const argv = ['curl', '-s', '-i', '--max-time', '10'];
  if (o.method) argv.push('-X', o.method);
  for (const [k, v] of Object.entries(o.headers ?? {})) argv.push('-H', `${k}: ${v}`);
  argv.push(url);
  const { stdout } = await run(argv, { ns, allowFail: true });
  const cut = stdout.indexOf('\r\n\r\n');
  const head = cut < 0 ? stdout : stdout.slice(0, cut);
  const lines = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  return { status: Number(/^HTTP\/[\d.]+ (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0), headers, body: cut < 0 ? '' : stdout.slice(cut + 4) };
}
