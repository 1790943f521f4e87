// The primary of a daemon with worker processes (node:cluster; quantum-server's api_workers, the metadata
// agent's and nova-api's metadata_workers): forks them, starts another when one dies, gives up when they keep
// dying at start, and stops them all on shutdown.
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from './log.js';

export interface WorkerSupervisorOptions {
  count: number;
  /** How the log names them, e.g. 'API worker', 'metadata worker'. */
  name: string;
  log: Logger;
  /** Before a dead worker's successor is forked (default 500 ms). */
  respawnDelayMs?: number;
}

export interface WorkerSupervisor {
  /** Workers running now. */
  readonly live: number;
  /** SIGTERM to every worker, SIGKILL after `graceMs`; resolves when all have exited. */
  stop(graceMs?: number): Promise<void>;
}

/** Deaths within this long after a fork count as dying at start; five in a row and the daemon exits 1. */
const QUICK_DEATH_MS = 10_000;
const QUICK_DEATHS = 5;

export function superviseWorkers(o: WorkerSupervisorOptions): WorkerSupervisor {
  let stopping = false;
  let quickDeaths = 0;
  const live = new Map<Worker, number>();
  const fork = () => {
    const w = cluster.fork();
    live.set(w, Date.now());
    w.on('exit', (code, signal) => {
      const born = live.get(w) ?? 0;
      live.delete(w);
      if (stopping) return;
      // A worker that cannot even start (port taken, database gone) would otherwise be respawned forever.
      quickDeaths = Date.now() - born < QUICK_DEATH_MS ? quickDeaths + 1 : 0;
      if (quickDeaths >= QUICK_DEATHS) {
        o.log.error({ pid: w.process.pid, code, signal }, `${o.name}s keep dying at start; giving up`);
        stopping = true;
        for (const other of live.keys()) other.process.kill('SIGTERM');
        process.exitCode = 1;
        setTimeout(() => process.exit(1), 2000).unref();
        return;
      }
      o.log.error({ pid: w.process.pid, code, signal }, `${o.name} died; starting another`);
      // Not unref'd: with every worker dead this timer is what keeps the primary alive to fork the next one.
      setTimeout(() => {
        if (!stopping) fork();
      }, o.respawnDelayMs ?? 500);
    });
  };
  for (let i = 0; i < o.count; i++) fork();
  return {
    get live() {
      return live.size;
    },
    async stop(graceMs = 5000) {
      stopping = true;
      await Promise.all(
        [...live.keys()].map(
          (w) =>
            new Promise<void>((resolve) => {
              if (w.isDead()) return resolve();
              w.once('exit', () => resolve());
              w.process.kill('SIGTERM');
              setTimeout(() => w.process.kill('SIGKILL'), graceMs).unref();
            }),
        ),
      );
    },
  };
}
