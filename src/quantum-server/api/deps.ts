// What the quantum-server API plugins are built over.
import type { AgentRpc } from '../agent-rpc.js';
import type { QuantumPlugin } from '../plugin.js';
import type { QuantumPolicy } from '../policy.js';

export interface ApiDeps {
  plugin: QuantumPlugin;
  policy: QuantumPolicy;
  rpc: AgentRpc;
}
