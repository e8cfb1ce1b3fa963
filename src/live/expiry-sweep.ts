// Owns closing things at a deadline with ONE timer, whatever their number: entries sit in a
// min-heap by deadline, the timer is armed for the earliest one, and when it fires every entry
// that is due is handed to `expire` (in deadline order) and the timer is armed for the next.
// Used for sockets whose access token expires (a timer per socket would be thousands of timers).

/** setTimeout's longest delay (about 24.8 days); a later deadline is simply re-checked then. */
const MAX_TIMER_MS = 2 ** 31 - 1;

interface Entry<T> {
  atMs: number;
  item: T;
  /** Position in the heap, kept up to date so a closed item is removed at once. */
  index: number;
}

export class ExpirySweep<T> {
  private heap: Entry<T>[] = [];
  private entries = new Map<T, Entry<T>>();
  private timer: NodeJS.Timeout | null = null;
  private armedFor = Number.POSITIVE_INFINITY;
  private stopped = false;

  constructor(
    private readonly expire: (item: T) => void,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.heap.length;
  }

  /** Hands `item` to `expire` once `atMs` has passed (at once if it already has). */
  add(item: T, atMs: number): void {
    if (this.stopped || this.entries.has(item)) return;
    const e: Entry<T> = { atMs, item, index: this.heap.length };
    this.entries.set(item, e);
    this.heap.push(e);
    this.up(e.index);
    if (atMs < this.armedFor) this.arm();
  }

  /** Forgets `item` (it closed before its deadline); memory stays bounded by live items. */
  remove(item: T): void {
    const e = this.entries.get(item);
    if (!e) return;
    this.entries.delete(item);
    this.removeAt(e.index);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.heap = [];
    this.entries.clear();
  }

  private arm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.armedFor = Number.POSITIVE_INFINITY;
    const first = this.heap[0];
    if (!first || this.stopped) return;
    const delay = Math.min(Math.max(0, first.atMs - this.now()), MAX_TIMER_MS);
    this.armedFor = first.atMs;
    this.timer = setTimeout(() => this.fire(), delay);
    this.timer.unref();
  }

  private fire(): void {
    this.timer = null;
    const now = this.now();
    while (this.heap.length > 0 && this.heap[0]!.atMs <= now) {
      const e = this.heap[0]!;
      this.entries.delete(e.item);
      this.removeAt(0);
      try {
        this.expire(e.item);
      } catch {
        // One entry failing to close must not keep the others (or the timer) from running.
      }
    }
    this.arm();
  }

  private removeAt(i: number): void {
    const h = this.heap;
    const last = h.pop()!;
    if (i === h.length) return;
    h[i] = last;
    last.index = i;
    this.down(i);
    this.up(last.index);
  }

  private swap(a: number, b: number): void {
    const h = this.heap;
    [h[a], h[b]] = [h[b]!, h[a]!];
    h[a]!.index = a;
    h[b]!.index = b;
  }

  private up(i: number): void {
    const h = this.heap;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (h[parent]!.atMs <= h[i]!.atMs) break;
      this.swap(parent, i);
      i = parent;
    }
  }

  private down(i: number): void {
    const h = this.heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && h[l]!.atMs < h[m]!.atMs) m = l;
      if (r < h.length && h[r]!.atMs < h[m]!.atMs) m = r;
      if (m === i) return;
      this.swap(m, i);
      i = m;
    }
  }
}
