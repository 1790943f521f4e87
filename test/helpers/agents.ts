// What the L3 and DHCP agent tests share: a debug log on demand, a real quantum-server, and a stand-in for
// quantum-metadata-agent on the proxies' socket; also the dhclient cleanup of the tests that run guests.
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { createLogger, silentLogger, type Logger } from '../../src/common/log.js';
import { startQuantumServer, type RunningQuantum } from './quantum-server.js';

/** AGENT_TEST_LOG=<file> keeps the in-process agents' debug log for a failing run. */
export const agentTestLog: Logger = process.env.AGENT_TEST_LOG ? createLogger({ name: 'agent-test', debug: true, log_file: process.env.AGENT_TEST_LOG }) : silentLogger;

export interface AgentBackend {
  quantum: RunningQuantum;
  /** Answers every request on $state/metadata_proxy with {path, headers}: what the proxy sent. */
  standIn: Server;
  /** Closes the stand-in, then stops quantum-server. */
  stop(): Promise<void>;
}

/** quantum-server with its state (and SQLite file) in `state`, and the echoing stand-in on $state/metadata_proxy. */
export async function startAgentBackend(state: string): Promise<AgentBackend> {
  const quantum = await startQuantumServer(state);
  const standIn = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ path: req.url, headers: req.headers }));
  });
  try {
    await new Promise<void>((resolve, reject) => {
      standIn.once('error', reject);
      standIn.listen(join(state, 'metadata_proxy'), resolve);
    });
  } catch (e) {
    await quantum.stop();
    throw e;
  }
  return {
    quantum,
    standIn,
    async stop() {
      standIn.close();
      await quantum.stop();
    },
  };
}

/** SIGKILL the dhclients whose pid files are listed (only a process whose command line names its pid file). */
export function killDhclients(pidFiles: readonly string[]): void {
  for (const pf of pidFiles) {
    try {
      const pid = Number(readFileSync(pf, 'utf8'));
      if (pid > 1 && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(pf)) process.kill(pid, 'SIGKILL');
    } catch {
      /* not running */
    }
  }
}
