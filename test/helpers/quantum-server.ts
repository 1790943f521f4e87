// A real quantum-server process for the integration tests (shared by the metadata-path, nova and agent tests).
import { join } from 'node:path';
import { QuantumClient } from '../../src/common/quantum-client.js';
import { getFreePort, spawnDaemon, waitForListen, type Daemon } from './proc.js';

export interface RunningQuantum {
  url: string;
  port: number;
  client: QuantumClient;
  daemon: Daemon;
  /** Closes the client, then stops the daemon. */
  stop(): Promise<void>;
}

/** quantum-server on a free loopback port with its own SQLite file under dir; stopped again if it does not come up. */
export async function startQuantumServer(dir: string, extraArgs: string[] = []): Promise<RunningQuantum> {
  const port = await getFreePort();
  const daemon = spawnDaemon('quantum-server/main.js', ['--bind_host', '127.0.0.1', '--bind_port', String(port), '--state_path', dir, '--database-connection', `sqlite:///${join(dir, 'quantum.sqlite')}`, ...extraArgs]);
  try {
    await waitForListen({ host: '127.0.0.1', port }, 20_000);
  } catch {
    await daemon.stop();
    throw new Error(`quantum-server did not start: ${daemon.output()}`);
  }
  const url = `http://127.0.0.1:${port}`;
  const client = new QuantumClient({ url });
  return {
    url,
    port,
    client,
    daemon,
    async stop() {
      await client.close();
      await daemon.stop();
    },
  };
}
