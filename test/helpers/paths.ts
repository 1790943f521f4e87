// Where the compiled tree is, wherever tsc put it (tests spawn daemons from the same build they run from).
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** <outDir> (contains src/ and test/ compiled). */
export const buildRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** The repository root (for etc/ and bin/). */
export const repoRoot = resolve(buildRoot, '..');

/**
 * argv to run a daemon's compiled main, e.g. daemonArgv('quantum-server/main.js'). The proxy runs from its
 * CommonJS build (dist/proxy), the copy the agents start.
 */
export function daemonArgv(mainRelative: string, ...args: string[]): string[] {
  return [process.execPath, resolve(buildRoot, mainRelative === 'ns-proxy/main.js' ? 'proxy' : 'src', mainRelative), ...args];
}
