// The proxy's per-request and per-connection collections (the exchanges in flight, a listener's guests): objects
// that carry their own index, added and removed in O(1) with no hash table behind them.
//
// Why not a Set: a Set's table is rebuilt every few dozen add/delete pairs, and the obsolete table keeps pointing at
// its successor (for live iterators) and at the entries it held. Once one table is in the old generation (any full
// GC promotes the current one: the quiet-period compaction, V8's memory reducer), every dead predecessor holds its
// successor and the requests in it through young GCs until the next full GC, so those were promoted too, and so
// on for good: 75 KB promoted per young GC under keep-alive load (nothing now), 135 KB with a connection per
// request (47 KB now, node's own), a full GC every ~18,000 requests, a tenth to a quarter of the proxy's CPU per
// request (bench/proxy-gc.ts).

export interface Slotted {
  /** Index in the list holding it; -1 when in none. */
  slot: number;
}

export class SlotList<T extends Slotted> {
  private readonly items: T[] = [];

  get size(): number {
    return this.items.length;
  }

  add(x: T): void {
    x.slot = this.items.push(x) - 1;
  }

  /** The last item moves into the freed slot. */
  delete(x: T): boolean {
    const i = x.slot;
    if (i < 0 || this.items[i] !== x) return false;
    const last = this.items.pop()!;
    if (last !== x) {
      this.items[i] = last;
      last.slot = i;
    }
    x.slot = -1;
    return true;
  }

  /** Last first, so that deleting the item being visited (it takes the last one's place, visited already) skips nothing. */
  *[Symbol.iterator](): Generator<T, void, undefined> {
    for (let i = this.items.length - 1; i >= 0; i--) {
      const x = this.items[i];
      if (x !== undefined) yield x;
    }
  }
}
