// The qm_netns addon as ES modules find it: dist/native/qm_netns.node, next to this build, whatever script
// started node (bin/quantum-l3-agent.js, a test, a bench). The CommonJS proxy build finds it from __dirname.
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadNetnsSocket, type NetnsSocket } from './netns-socket.js';

export const nativeAddonPath = resolve(dirname(fileURLToPath(import.meta.url)), '../../native/qm_netns.node');

let addon: NetnsSocket | null | undefined;

/** The addon, or null when it is not built (the callers then run a process instead); loaded once. */
export function nativeAddon(): NetnsSocket | null {
  if (addon === undefined) {
    try {
      addon = loadNetnsSocket(nativeAddonPath);
    } catch {
      addon = null;
    }
  }
  return addon;
}
