// Per-source fair scheduling of the proxy's connections to the metadata agent (issue 13). A guest source
// (one listener's peer address) is a Flow. Three rules keep a flooding guest from delaying its neighbours:
// - while more than one source is asking (requests of two sources followed each other within `windowMs`), a source holds
//   at most `perFlow` agent connections at once, even if more are free: a request's time at the agent grows
//   with everything in flight there, so this bounds what a neighbour's request meets of the flooder's. A
//   source alone may use them all (one guest's throughput is not capped for nothing);
// - what waits is taken round-robin by source, not first come first served, so one source's backlog never
//   sits in front of another's;
// - when the queue is full, the source with the longest backlog loses its newest request (longest-queue
//   drop), so no source can push the others out of the queue either.
// The hot path (a free connection, a source under its share) costs a few compares and an increment.

/** One guest source's share: what it has at the agent and what waits. */
export class Flow<T> {
  /**
   * Who the source is: a flow that is gone (its guest closed every connection) and comes back as a new object
   * is still the same source, not a second one competing with it.
   */
  constructor(readonly key: string) {}

  /** Its items holding an agent connection (from start or take() until done()). */
  running = 0;
  /** Waiting items, oldest first, from `head` on. */
  private items: T[] = [];
  private head = 0;
  /** In the round-robin ring (eligible: something queued and under its share). */
  inRing = false;
  nextInRing: Flow<T> | undefined;

  get queued(): number {
    return this.items.length - this.head;
  }

  /** @internal FairQueue only. */
  pushItem(item: T, front: boolean): void {
    if (!front) this.items.push(item);
    else if (this.head > 0) this.items[--this.head] = item;
    else this.items.unshift(item);
  }

  /** @internal */
  shiftItem(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head]!;
    this.items[this.head++] = undefined as T;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head >= 64 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  /** @internal */
  popItem(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items.pop()!;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    }
    return item;
  }

  /** @internal A waiting item that ended (its guest went away, it timed out). */
  removeItem(item: T): boolean {
    const i = this.items.lastIndexOf(item);
    if (i < this.head) return false;
    this.items.splice(i, 1);
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    }
    return true;
  }
}

export class FairQueue<T> {
  /** Items waiting, over every flow. */
  size = 0;
  /** The flow of the last request that arrived, and when a request of another flow than the one before came. */
  private lastFlow: Flow<T> | undefined;
  private switchedAt = -Infinity;
  private ringHead: Flow<T> | undefined;
  private ringTail: Flow<T> | undefined;
  /** Flows with something queued (eligible or at their share): where a full queue looks for the longest. */
  private readonly backlogged = new Set<Flow<T>>();

  constructor(
    /** Items of one flow running at once. */
    readonly perFlow: number,
    /** Items waiting at once, over every flow. */
    readonly max: number,
    /** Shares apply for this many ms after requests of two flows followed each other. */
    readonly windowMs = 1000,
  ) {
    if (!(perFlow >= 1)) throw new Error('perFlow must be at least 1');
  }

  /** A request of `f` arrives (before mayRun): what tells whether `f` is alone. */
  arrived(f: Flow<T>, now: number): void {
    const last = this.lastFlow;
    if (f === last) return;
    if (last !== undefined && last.key !== f.key) this.switchedAt = now;
    this.lastFlow = f;
  }

  /** Items one flow may run at once now: perFlow while sources compete, else no limit but the connections'. */
  share(now: number): number {
    return now - this.switchedAt < this.windowMs ? this.perFlow : Infinity;
  }

  /** May an item of `f` run now, as far as its share goes (and nothing of its own waits before it)? */
  mayRun(f: Flow<T>, now: number): boolean {
    return f.queued === 0 && (f.running < this.perFlow || f.running < this.share(now));
  }

  /** An item of `f` starts running without having waited (mayRun said so and a connection was free). */
  started(f: Flow<T>): void {
    f.running++;
  }

  /**
   * Queue an item of `f`. Returns what is refused instead: nothing, `item` itself (the queue is full and `f`
   * has the longest backlog, or a share of zero), or the newest item of a longer backlog, displaced for it.
   * `front`: an item that was running and must wait again (a retry): first of its flow, never refused.
   */
  push(f: Flow<T>, item: T, now: number, front = false): T | undefined {
    let refused: T | undefined;
    if (!front && this.size >= this.max) {
      let longest: Flow<T> | undefined;
      for (const b of this.backlogged) if (longest === undefined || b.queued > longest.queued) longest = b;
      if (longest === undefined || longest.queued <= f.queued) return item;
      refused = longest.popItem();
      this.size--;
      if (longest.queued === 0) this.backlogged.delete(longest);
    }
    f.pushItem(item, front);
    this.size++;
    if (f.queued === 1) this.backlogged.add(f);
    if (f.running < this.share(now)) this.enter(f);
    return refused;
  }

  /** The next item to run, round-robin over the flows under their share (its flow's running is counted). */
  take(now: number): T | undefined {
    const share = this.share(now);
    for (;;) {
      const f = this.ringHead;
      if (f === undefined) return undefined;
      this.ringHead = f.nextInRing;
      if (this.ringHead === undefined) this.ringTail = undefined;
      f.nextInRing = undefined;
      f.inRing = false;
      // Over its share (sources compete now): back in the ring at its next done().
      if (f.running >= share) continue;
      const item = f.shiftItem();
      if (item === undefined) continue;
      this.size--;
      f.running++;
      if (f.queued === 0) this.backlogged.delete(f);
      else if (f.running < share) this.enter(f);
      return item;
    }
  }

  /** An item of `f` stopped running. True when `f` has items waiting that may now run (`now`: read only then). */
  done(f: Flow<T>, now: () => number = Date.now): boolean {
    f.running--;
    if (f.queued === 0 || f.running >= this.share(now())) return false;
    this.enter(f);
    return true;
  }

  /** A waiting item of `f` leaves the queue without running. */
  remove(f: Flow<T>, item: T): void {
    if (!f.removeItem(item)) return;
    this.size--;
    // An empty flow left in the ring is skipped by take().
    if (f.queued === 0) this.backlogged.delete(f);
  }

  private enter(f: Flow<T>): void {
    if (f.inRing) return;
    f.inRing = true;
    if (this.ringTail === undefined) this.ringHead = f;
    else this.ringTail.nextInRing = f;
    this.ringTail = f;
  }
}
