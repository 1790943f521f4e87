// Writes the sample configs in etc/ from the daemons' option declarations (oslo-config-generator's job).
// Usage: node dist/src/tools/gen-config.js [--check]   (--check: exit 1 if etc/ is out of date)
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mergeSpecs, renderSample, type Spec } from '../common/config.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../..');

export const samples: Array<{ file: string; title: string; module: string }> = [
  { file: 'etc/quantum/quantum.conf', title: 'quantum.conf: quantum-server', module: '../quantum-server/opts.js' },
  { file: 'etc/quantum/metadata_agent.ini', title: 'metadata_agent.ini: quantum-metadata-agent', module: '../metadata-agent/opts.js' },
  { file: 'etc/quantum/l3_agent.ini', title: 'l3_agent.ini: quantum-l3-agent', module: '../l3-agent/opts.js' },
  { file: 'etc/quantum/dhcp_agent.ini', title: 'dhcp_agent.ini: quantum-dhcp-agent', module: '../dhcp-agent/opts.js' },
  { file: 'etc/nova/nova.conf', title: 'nova.conf: nova-api and nova-api-metadata', module: '../nova-api/opts.js' },
  { file: 'etc/glance/glance-api.conf', title: 'glance-api.conf: glance-api', module: '../glance-api/opts.js' },
];

function isSpec(v: unknown): v is Spec {
  if (!v || typeof v !== 'object') return false;
  const sections = Object.values(v as Record<string, unknown>);
  return (
    sections.length > 0 &&
    sections.every((s) => s && typeof s === 'object' && Object.values(s as Record<string, unknown>).every((o) => !!o && typeof o === 'object' && 'kind' in (o as object) && 'help' in (o as object)))
  );
}

/** Every Spec a daemon's opts module exports, merged in export order. */
export async function specOf(module: string): Promise<Spec> {
  const mod = (await import(module)) as Record<string, unknown>;
  let spec: Spec = {};
  for (const v of Object.values(mod)) if (isSpec(v)) spec = mergeSpecs(spec, v);
  return spec;
}

export async function render(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const s of samples) out.set(s.file, renderSample(await specOf(s.module), s.title));
  return out;
}

async function main(): Promise<void> {
  const check = process.argv.includes('--check');
  let stale = 0;
  for (const [file, text] of await render()) {
    const path = resolve(repo, file);
    let old = '';
    try {
      old = readFileSync(path, 'utf8');
    } catch {
      /* new file */
    }
    if (old === text) continue;
    if (check) {
      process.stderr.write(`${file} is out of date; run npm run gen-config\n`);
      stale++;
    } else {
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, text);
      process.stdout.write(`wrote ${file}\n`);
    }
  }
  process.exit(stale ? 1 : 0);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) void main();
