// A tiny logger writing pino's JSON line format (level numbers, time, pid, name, msg), for processes
// that run by the hundred (one metadata proxy per router) where loading pino would cost ~8 MB each.
// Lines are interchangeable with pino's, so `pino-pretty` and log shippers read both.
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { dirname } from 'node:path';

const LEVELS = { debug: 20, info: 30, warn: 40, error: 50 } as const;
type Level = keyof typeof LEVELS;
type Fields = Record<string, unknown>;

export interface LiteLogger {
  readonly isDebug: boolean;
  debug(fields: Fields | string, msg?: string): void;
  info(fields: Fields | string, msg?: string): void;
  warn(fields: Fields | string, msg?: string): void;
  error(fields: Fields | string, msg?: string): void;
  /** Flush and close a log file (no-op on stderr). */
  close(): Promise<void>;
  /** Reopen the log file by name (after logrotate moved it away); no-op on stderr. */
  reopen(): void;
}

function errFields(e: Error): Fields {
  const o: Fields = { type: e.name, message: e.message, stack: e.stack };
  const code = (e as NodeJS.ErrnoException).code;
  if (code) o.code = code;
  return o;
}

export function createLiteLogger(o: { name: string; debug?: boolean; path?: string | undefined }): LiteLogger {
  let stream: WriteStream | undefined;
  const open = (path: string) => {
    mkdirSync(dirname(path), { recursive: true });
    const s = createWriteStream(path, { flags: 'a' });
    // A log file that cannot be written must not take the daemon down.
    s.on('error', (e) => process.stderr.write(`${o.name}: cannot write log ${path}: ${e.message}\n`));
    return s;
  };
  if (o.path) stream = open(o.path);
  const min = o.debug ? LEVELS.debug : LEVELS.info;
  const head = `,"pid":${process.pid},"name":${JSON.stringify(o.name)}`;
  const write = (level: Level, a: Fields | string, msg?: string) => {
    const n = LEVELS[level];
    if (n < min) return;
    let fields: Fields | undefined;
    if (typeof a === 'string') msg = a;
    else fields = a;
    let line = `{"level":${n},"time":${Date.now()}${head}`;
    if (fields) {
      for (const [k, v] of Object.entries(fields)) {
        if (v === undefined) continue;
        line += `,${JSON.stringify(k)}:${JSON.stringify(v instanceof Error ? errFields(v) : v)}`;
      }
    }
    line += `,"msg":${JSON.stringify(msg ?? '')}}\n`;
    if (stream) stream.write(line);
    else process.stderr.write(line);
  };
  return {
    isDebug: min <= LEVELS.debug,
    debug: (a, m) => write('debug', a, m),
    info: (a, m) => write('info', a, m),
    warn: (a, m) => write('warn', a, m),
    error: (a, m) => write('error', a, m),
    close: () => new Promise<void>((r) => (stream ? stream.end(() => r()) : r())),
    reopen: () => {
      if (!o.path || !stream) return;
      const old = stream;
      stream = open(o.path);
      old.end();
    },
  };
}
