// Compiles src/linux/native/*.c (netns.c: sockets in namespaces; spawn.c: commands without fork) into dist/native/qm_netns.node with the system C compiler against the
// headers of the node that runs this script (no node-gyp: it would download headers, and nothing outside
// the package registries can be fetched here). Run by `npm run build`; needs gcc and libc6-dev (install.sh).
//   node dist/src/tools/build-native.js [--cc gcc]
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorMessage } from '../common/errors.js';
import { execute } from '../linux/exec.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../..');
export const nativeSources = ['netns.c', 'spawn.c'].map((f) => join(repo, 'src', 'linux', 'native', f));
export const nativeOutput = join(repo, 'dist', 'native', 'qm_netns.node');

/** node_api.h of this node: <prefix>/include/node (Debian's nodejs: /usr/include/node). */
export function nodeIncludeDir(): string | undefined {
  const candidates = [resolve(dirname(process.execPath), '..', 'include', 'node'), '/usr/include/node', '/usr/local/include/node'];
  return candidates.find((d) => existsSync(join(d, 'node_api.h')));
}

async function main(): Promise<void> {
  const i = process.argv.indexOf('--cc');
  const cc = i > 0 ? process.argv[i + 1]! : (process.env.CC ?? 'cc');
  const inc = nodeIncludeDir();
  if (!inc) throw new Error(`node_api.h not found next to ${process.execPath} (looked in <prefix>/include/node, /usr/include/node, /usr/local/include/node)`);
  mkdirSync(dirname(nativeOutput), { recursive: true });
  // -Wl,-z,now: resolve the napi_* symbols against node at load time, so a mismatch fails at require().
  await execute([cc, '-O2', '-fPIC', '-shared', '-Wall', '-Wextra', '-Wno-unused-parameter', '-Werror', '-fvisibility=hidden', `-I${inc}`, '-o', nativeOutput, ...nativeSources, '-Wl,-z,now'], { timeoutMs: 120_000 });
}

main().catch((e: unknown) => {
  process.stderr.write(`build-native: ${errorMessage(e)}\n(install gcc and libc6-dev: ./install.sh does)\n`);
  process.exit(1);
});
