// pino loggers configured from the oslo.log-style options every daemon shares.
import { mkdirSync, openSync } from 'node:fs';
import { isAbsolute, join, dirname } from 'node:path';
import pino, { type Logger } from 'pino';

export type { Logger };

export interface LogOptions {
  name: string;
  debug?: boolean;
  verbose?: boolean;
  log_file?: string | undefined;
  log_dir?: string | undefined;
  /** Used when log_dir is set but log_file is not (oslo uses the program name). */
  defaultFile?: string;
}

/** Resolve where logs go: log_file (relative to log_dir if given), or <log_dir>/<defaultFile>, else stderr. */
export function logPath(o: LogOptions): string | undefined {
  if (o.log_file) return o.log_dir && !isAbsolute(o.log_file) ? join(o.log_dir, o.log_file) : o.log_file;
  if (o.log_dir) return join(o.log_dir, o.defaultFile ?? `${o.name}.log`);
  return undefined;
}

export function createLogger(o: LogOptions): Logger {
  // oslo: --debug → DEBUG; otherwise INFO (verbose has been a no-op since Liberty; accepted for old unit files).
  const level = o.debug ? 'debug' : 'info';
  const path = logPath(o);
  let dest: pino.DestinationStream;
  if (path) {
    mkdirSync(dirname(path), { recursive: true });
    // Open synchronously so an early exit (bad config, port in use) can still flush what it logged.
    dest = pino.destination({ fd: openSync(path, 'a'), sync: false });
  } else {
    dest = pino.destination({ fd: 2, sync: true });
  }
  return pino({ name: o.name, level, base: { pid: process.pid, name: o.name } }, dest);
}

/** A logger that drops everything, for library code exercised in tests without a daemon. */
export const silentLogger: Logger = pino({ level: 'silent' });
