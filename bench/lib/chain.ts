// The whole chain: guest → proxy (ours or haproxy) → quantum-metadata-agent → quantum-server (lookup)
// → nova-api metadata (8775), built through the real APIs.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Topology } from './netns.js';
import type { Proc } from './procs.js';

export const CHAIN_DAEMONS = ['quantum-server', 'nova-api', 'metadata-agent'];

/** true when every daemon of the chain is built, else why not. */
export function chainReady(buildRoot: string): true | string {
  const missing = CHAIN_DAEMONS.filter((d) => !existsSync(resolve(buildRoot, 'src', d, 'main.js')));
  return missing.length ? `not built yet: ${missing.map((d) => `src/${d}/main.ts`).join(', ')}` : true;
}

export interface ChainOptions {
  buildRoot: string;
  tmp: string;
  topo: Topology;
  proxyMain: string;
  ports: { ours: number; haproxy: number };
  log: (msg: string) => void;
}

export interface Chain {
  ours: Proc;
  haproxy: Proc;
  procs: Proc[];
  /** Namespace to reach nova from ('' = root) and its metadata URL base. */
  novaNs?: string;
  novaUrl: string;
  novaHeaders: Record<string, string>;
  ec2InstanceId: string;
  stop(): Promise<void>;
}

export async function buildChain(_o: ChainOptions): Promise<Chain> {
  throw new Error('whole chain not implemented yet');
}
