// The frame every daemon's main.ts runs in: one-line config errors, logged crashes, orderly shutdown.
import { ConfigError, errorMessage } from './errors.js';
import type { Logger } from './log.js';

type Closer = () => Promise<void> | void;

export interface Service {
  /** Called on SIGTERM/SIGINT, in reverse order of registration. */
  onShutdown(fn: Closer): void;
  setLogger(log: Logger): void;
}

/**
 * Run a daemon's main. A ConfigError prints "<prog>: <message>" and exits 1; any other error at
 * start-up is logged and exits 1; after start-up, SIGTERM/SIGINT run the closers and exit 0.
 */
export function runService(prog: string, main: (svc: Service) => Promise<void>): void {
  const closers: Closer[] = [];
  let log: Logger | undefined;
  let stopping = false;
  const svc: Service = {
    onShutdown: (fn) => closers.push(fn),
    setLogger: (l) => {
      log = l;
    },
  };
  const stop = async (sig: string) => {
    if (stopping) return;
    stopping = true;
    log?.info({ signal: sig }, 'caught signal, stopping');
    for (const fn of closers.reverse()) {
      try {
        await fn();
      } catch (e) {
        log?.error({ err: e }, 'error during shutdown');
      }
    }
    log?.flush?.();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('uncaughtException', (e) => {
    // Keep serving: one bad request must not take the daemon down, but say so loudly.
    if (log) log.error({ err: e }, 'uncaught exception');
    else process.stderr.write(`${prog}: uncaught exception: ${e.stack ?? String(e)}\n`);
  });
  process.on('unhandledRejection', (e) => {
    if (log) log.error({ err: e }, 'unhandled rejection');
    else process.stderr.write(`${prog}: unhandled rejection: ${errorMessage(e)}\n`);
  });
  main(svc).catch((e: unknown) => {
    if (e instanceof ConfigError) {
      process.stderr.write(`${prog}: ${e.message}\n`);
      log?.error(e.message);
    } else {
      process.stderr.write(`${prog}: failed to start: ${errorMessage(e)}\n`);
      log?.error({ err: e }, 'failed to start');
    }
    log?.flush?.();
    process.exit(1);
  });
}
