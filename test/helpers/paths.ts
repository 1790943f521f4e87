// Where the compiled tree is, wherever tsc put it (tests spawn daemons from the same build they run from).
import { dirname, isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** <outDir> (contains src/ and test/ compiled). */
export const buildRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** The repository root (for etc/ and bin/). */
export const repoRoot = resolve(buildRoot, '..');

/** argv to run a daemon's compiled main: relative to the build's src/ (e.g. 'quantum-server/main.js'), or absolute. */
export function daemonArgv(main: string, ...args: string[]): string[] {
  return [process.execPath, isAbsolute(main) ? main : resolve(buildRoot, 'src', main), ...args];
}
