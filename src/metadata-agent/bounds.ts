// The agent's bound on work toward Nova (issue 13): at most `size` requests of a worker are being served at
// once (Neutron's wsgi_default_pool_size, its eventlet pool), at most `queue` more wait for a slot, and
// anything beyond is refused at once (the agent answers 503) instead of growing a backlog. A waiter whose
// proxy went away leaves the queue.

export type Release = () => void;

export class RequestSlots {
  private active = 0;
  private readonly waiting: { grant: (r: Release | undefined) => void; signal: AbortSignal; onAbort: () => void }[] = [];

  constructor(
    readonly size: number,
    readonly queue: number,
  ) {}

  get inFlight(): number {
    return this.active;
  }

  get queued(): number {
    return this.waiting.length;
  }

  private release = (): void => {
    // Hand the slot straight to the oldest waiter (active stays the same), else free it.
    const next = this.waiting.shift();
    if (next) {
      next.signal.removeEventListener('abort', next.onAbort);
      next.grant(this.releaser());
    } else this.active--;
  };

  /** A release function that works once. */
  private releaser(): Release {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.release();
    };
  }

  /**
   * A slot now, a promise of one (queued), or 'full'. The promise resolves undefined when `signal` aborts
   * while waiting.
   */
  acquire(signal: AbortSignal): Release | Promise<Release | undefined> | 'full' {
    if (this.active < this.size) {
      this.active++;
      return this.releaser();
    }
    if (this.waiting.length >= this.queue) return 'full';
    return new Promise((resolve) => {
      const w = {
        grant: resolve,
        signal,
        onAbort: () => {
          const i = this.waiting.indexOf(w);
          if (i >= 0) this.waiting.splice(i, 1);
          resolve(undefined);
        },
      };
      signal.addEventListener('abort', w.onAbort, { once: true });
      this.waiting.push(w);
    });
  }
}

/** At most one log line per `intervalMs` for a repeated event, carrying how many happened since the last. */
export class RateLimitedLog {
  private last = 0;
  private suppressed = 0;
  constructor(private readonly intervalMs: number) {}

  /** Call on each event: returns the count to log (this one and those suppressed), or 0 to stay quiet. */
  hit(now = Date.now()): number {
    this.suppressed++;
    if (now - this.last < this.intervalMs) return 0;
    this.last = now;
    const n = this.suppressed;
    this.suppressed = 0;
    return n;
  }
}
