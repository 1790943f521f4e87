// Build a running quantum-server from resolved options: database, migrations, HTTP listener.
import { createServer, type Server } from 'node:http';
import type { Logger } from '../common/log.js';
import { closeServer, listen } from '../common/http.js';
import { migrate, openDatabase, type Db } from '../db/connection.js';
import { quantumMigrations, type QuantumDatabase } from '../db/quantum-schema.js';
import { createApi } from './api.js';
import { QuantumStore } from './store.js';

export interface QuantumServerOptions {
  connection: string;
  host: string;
  port: number;
  baseMac?: string;
  agentDownTime?: number;
  authStrategy?: string;
  log: Logger;
  /** Skip migrations (api_workers children: the parent already ran them). */
  skipMigrations?: boolean;
}

export interface RunningQuantumServer {
  server: Server;
  port: number;
  url: string;
  store: QuantumStore;
  handle: Db<QuantumDatabase>;
  close(): Promise<void>;
}

export async function openQuantumDb(connection: string): Promise<Db<QuantumDatabase>> {
  const handle = openDatabase<QuantumDatabase>(connection, { poolSize: 10 });
  await migrate(handle, 'quantum', quantumMigrations);
  return handle;
}

export async function startQuantumServer(o: QuantumServerOptions): Promise<RunningQuantumServer> {
  const handle = o.skipMigrations ? openDatabase<QuantumDatabase>(o.connection, { poolSize: 10 }) : await openQuantumDb(o.connection);
  const store = new QuantumStore(handle, { baseMac: o.baseMac ?? 'fa:16:3e:00:00:00', agentDownTime: o.agentDownTime ?? 75, log: o.log });
  const server = createServer({ keepAliveTimeout: 30_000 }, createApi({ store, log: o.log, authStrategy: o.authStrategy ?? 'noauth' }));
  let port: number;
  try {
    port = await listen(server, o.host, o.port);
  } catch (e) {
    await handle.close();
    throw e;
  }
  const host = o.host === '0.0.0.0' || o.host === '::' ? '127.0.0.1' : o.host;
  return {
    server,
    port,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    store,
    handle,
    async close() {
      await closeServer(server);
      server.closeAllConnections?.();
      await handle.close();
    },
  };
}
