// A TTL map bounded in size, standing in for oslo.cache's memory backend (Nova's metadata cache, the metadata
// agent's lookup cache). Expired entries are dropped on read; an optional sweep bounds memory for keys that are
// never asked again.

export interface TtlCacheOptions {
  /** Oldest entries go first beyond this many (default: unbounded). */
  maxEntries?: number;
  /** Sweep expired entries every max(1 s, ttl). */
  sweep?: boolean;
}

export class TtlCache<V> {
  private readonly map = new Map<string, { v: V; exp: number }>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    readonly ttlMs: number,
    private readonly o: TtlCacheOptions = {},
  ) {
    if (ttlMs > 0 && o.sweep) this.sweeper = setInterval(() => this.sweep(), Math.max(1000, ttlMs)).unref();
  }

  get(key: string): V | undefined {
    const e = this.map.get(key);
    if (!e) return undefined;
    if (e.exp <= Date.now()) {
      this.map.delete(key);
      return undefined;
    }
    return e.v;
  }

  /** A TTL of 0 disables caching entirely (as Nova's metadata_cache_expiration = 0). */
  set(key: string, v: V): void {
    if (this.ttlMs <= 0) return;
    this.map.delete(key);
    if (this.o.maxEntries !== undefined && this.map.size >= this.o.maxEntries) this.map.delete(this.map.keys().next().value!);
    this.map.set(key, { v, exp: Date.now() + this.ttlMs });
  }

  delete(key: string): boolean {
    return this.map.delete(key);
  }

  sweep(): void {
    const now = Date.now();
    for (const [k, e] of this.map) if (e.exp <= now) this.map.delete(k);
  }

  clear(): void {
    this.map.clear();
  }

  get size(): number {
    return this.map.size;
  }

  /** The keys held (expired ones included until read or swept); safe to delete while iterating. */
  keys(): IterableIterator<string> {
    return this.map.keys();
  }

  close(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    this.map.clear();
  }
}
