// Per-source request rate limiting, as Neutron's haproxy does it (neutron/common/metadata.py, 2023.2+): two
// stick tables keyed by source address storing http_req_rate(<window>), every request tracked (a refused one
// too), and `http-request deny deny_status 429 if { src_http_req_rate(<table>) gt <limit> }`. The rate is
// haproxy's freq_ctr over a period: this period's count plus the previous period's scaled by the part of the
// window it still covers, a sliding-window estimate. One limiter per listener: sources are per namespace
// (two tenants may use the same address), as they are per haproxy process in Neutron.

export interface RateLimitConfig {
  /** Address families limited (Neutron: one of the two; here both may be). */
  ipVersions: readonly (4 | 6)[];
  /** Milliseconds. */
  baseWindowMs: number;
  baseLimit: number;
  burstWindowMs: number;
  burstLimit: number;
}

/** haproxy's stick-table `size 10k`: beyond it the oldest entry makes room. */
export const TABLE_SIZE = 10_000;

/** haproxy's answer to `deny_status 429` (its built-in error message; the body is its errorfile text). */
export const TOO_MANY_BODY = Buffer.from('<html><body><h1>429 Too Many Requests</h1>\nYou have sent too many requests in a given amount of time.\n</body></html>\n');

interface Entry {
  bStart: number;
  bCurr: number;
  bPrev: number;
  sStart: number;
  sCurr: number;
  sPrev: number;
  last: number;
}

/** Rotate one freq_ctr to `now`'s period and count one event; returns the rate over the period. */
function hitRate(e: Entry, base: boolean, period: number, now: number): number {
  let start = base ? e.bStart : e.sStart;
  let curr = base ? e.bCurr : e.sCurr;
  let prev = base ? e.bPrev : e.sPrev;
  const elapsed = now - start;
  if (elapsed >= period) {
    // One period later: this one becomes the previous; two or more: both are empty.
    prev = elapsed >= 2 * period ? 0 : curr;
    curr = 0;
    start += Math.floor(elapsed / period) * period;
  }
  curr++;
  if (base) {
    e.bStart = start;
    e.bCurr = curr;
    e.bPrev = prev;
  } else {
    e.sStart = start;
    e.sCurr = curr;
    e.sPrev = prev;
  }
  const remain = period - (now - start);
  return curr + Math.floor((prev * remain) / period);
}

export class RateLimiter {
  private readonly table = new Map<string, Entry>();
  private readonly v4: boolean;
  private readonly v6: boolean;
  private readonly expireMs: number;
  /** Requests refused since the last log line about it (the log is rate-limited as well). */
  refusedSinceLog = 0;
  refused = 0;
  lastLog = 0;

  constructor(readonly cfg: RateLimitConfig) {
    this.v4 = cfg.ipVersions.includes(4);
    this.v6 = cfg.ipVersions.includes(6);
    // haproxy: expire max(windows); an entry older than two periods counts nothing anyway.
    this.expireMs = 2 * Math.max(cfg.baseWindowMs, cfg.burstWindowMs);
  }

  get size(): number {
    return this.table.size;
  }

  /** Count a request from `peer` (as the proxy normalised it: IPv4 dotted, IPv6 otherwise); true when it is refused. */
  hit(peer: string, now: number): boolean {
    if (peer.includes(':') ? !this.v6 : !this.v4) return false;
    let e = this.table.get(peer);
    if (e === undefined) {
      if (this.table.size >= TABLE_SIZE) {
        const oldest = this.table.keys().next();
        if (!oldest.done) this.table.delete(oldest.value);
      }
      e = { bStart: now, bCurr: 0, bPrev: 0, sStart: now, sCurr: 0, sPrev: 0, last: now };
      this.table.set(peer, e);
    }
    e.last = now;
    const base = hitRate(e, true, this.cfg.baseWindowMs, now);
    const burst = hitRate(e, false, this.cfg.burstWindowMs, now);
    if (base > this.cfg.baseLimit || burst > this.cfg.burstLimit) {
      this.refused++;
      this.refusedSinceLog++;
      return true;
    }
    return false;
  }

  /** Drop the entries nobody has used for the expiry (called from the proxy's sweeper). */
  expire(now: number): void {
    for (const [k, e] of this.table) if (now - e.last >= this.expireMs) this.table.delete(k);
  }
}
