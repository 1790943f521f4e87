// The per-process metadata cache (oslo_cache.dict with expiration_time = metadata_cache_expiration).

export class TtlCache<V> {
  private readonly map = new Map<string, { v: V; exp: number }>();
  private sweeper: NodeJS.Timeout | undefined;
  /** Lookups that went to the backend; tests use it as Nova's tests count get_metadata_by_* calls. */
  misses = 0;

  constructor(readonly ttlSeconds: number) {
    if (ttlSeconds > 0) {
      // Expired entries are dropped on read; the sweep bounds memory for instances that are never asked again.
      this.sweeper = setInterval(() => this.sweep(), Math.max(1000, ttlSeconds * 1000)).unref();
    }
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

  /** Nova only stores when the expiration is > 0; 0 disables caching entirely. */
  set(key: string, v: V): void {
    if (this.ttlSeconds <= 0) return;
    this.map.set(key, { v, exp: Date.now() + this.ttlSeconds * 1000 });
  }

  delete(key: string): void {
    this.map.delete(key);
  }

  sweep(): void {
    const now = Date.now();
    for (const [k, e] of this.map) if (e.exp <= now) this.map.delete(k);
  }

  get size(): number {
    return this.map.size;
  }

  close(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.map.clear();
  }
}
