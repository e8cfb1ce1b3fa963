// Owns persisting a set of shards that changes (shards spread over processes: this process
// persists exactly the shards it owns). A new set stops the persister of the old one, which
// finishes its round, and starts one for the new set, whose lanes take over whatever the old
// lanes (or a previous owner's) read and left unacknowledged (Persister.init claims it).
import type { PersisterLike, PersistHealth } from "./persister-thread.ts";
import type { PersistStats } from "./persister.ts";

export class PersisterSwitch implements PersisterLike {
  private current: PersisterLike;
  private started = false;
  private changing: Promise<void> = Promise.resolve();

  constructor(
    private readonly make: (shards: number[]) => PersisterLike,
    private shards: number[],
  ) {
    this.current = make(shards);
  }

  get stats(): PersistStats {
    return this.current.stats;
  }

  get threadId(): number | null | undefined {
    return this.current.threadId;
  }

  init(): Promise<void> {
    return this.current.init();
  }

  start(): void {
    this.started = true;
    this.current.start();
  }

  /** Persists `shards` from now on; resolves once the old set's persister has stopped. */
  assign(shards: readonly number[]): Promise<void> {
    const next = [...shards].sort((a, b) => a - b);
    // A change that failed (Redis away while the new lanes started) does not block the next one.
    this.changing = this.changing
      .catch(() => {})
      .then(async () => {
        if (next.length === this.shards.length && next.every((s, i) => s === this.shards[i])) return;
        await this.current.stop().catch(() => {});
        // Until the new persister runs, the next assign() tries again even with the same set.
        this.shards = [];
        this.current = this.make(next);
        await this.current.init();
        this.shards = next;
        if (this.started) this.current.start();
      });
    return this.changing;
  }

  async stop(): Promise<void> {
    await this.changing.catch(() => {});
    await this.current.stop();
  }

  health(): PersistHealth {
    return this.current.health();
  }

  drain(): Promise<void> {
    return this.changing.then(() => this.current.drain());
  }
}
