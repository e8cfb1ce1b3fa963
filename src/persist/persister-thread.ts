// Owns running the WAL persister in a worker thread, so decoding WAL entries and building
// Postgres batches use the machine's other core instead of the event loop that answers tips.
// The ledger stays in this thread; the worker asks it for trim floors by message.
import type { RedisTarget } from "../redis/connect.ts";
import { Worker } from "node:worker_threads";
import type { Logger } from "pino";
import type { PersisterOptions, PersistStats } from "./persister.ts";

export interface PersistHealth {
  walLagMs: number;
  unpersistedEntries: number;
  halted: number[];
}

/** What the process needs of a persister, in this thread or in a worker. */
export interface PersisterLike {
  init(): Promise<void>;
  start(): void;
  stop(): Promise<void>;
  health(): PersistHealth;
  drain(): Promise<void>;
  readonly stats: PersistStats;
  /** The kernel id of the thread persisting (Linux), for its CPU in /metrics; null if unknown. */
  readonly threadId?: number | null;
}

export interface PersisterWorkerData {
  redis: RedisTarget;
  databaseUrl: string;
  logLevel: string;
  lanes: number;
  reportMs: number;
  options: Omit<PersisterOptions, "redis" | "pool" | "logger" | "trimFloor">;
}

export type ToWorker =
  | { t: "start" }
  | { t: "drain"; id: number }
  | { t: "stop"; id: number }
  | { t: "floor"; id: number; floor: string | null };

export type FromWorker =
  /** `tid`: the thread's kernel id, logged so its CPU can be told apart (bench/cpu-usage.ts). */
  | { t: "ready"; tid: number | null }
  | { t: "failed"; error: string }
  | { t: "health"; health: PersistHealth; stats: PersistStats }
  | { t: "floor?"; id: number; shard: number }
  | { t: "done"; id: number; error?: string };

export interface PersisterThreadOptions {
  data: PersisterWorkerData;
  logger: Logger;
  trimFloor: (shard: number) => string | null;
}

export class PersisterThread implements PersisterLike {
  private worker: Worker | null = null;
  private lastHealth: PersistHealth = { walLagMs: 0, unpersistedEntries: 0, halted: [] };
  private lastReportMs = Date.now();
  stats: PersistStats = { entries: 0, events: 0, rounds: 0 };
  threadId: number | null = null;
  private readonly pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private started = false;
  private stopping = false;

  constructor(private readonly o: PersisterThreadOptions) {}

  init(): Promise<void> {
    return this.spawn();
  }

  private spawn(): Promise<void> {
    return new Promise((resolve, reject) => {
      const worker = new Worker(new URL("./persister-worker.mjs", import.meta.url), {
        workerData: this.o.data,
      });
      this.worker = worker;
      let ready = false;
      worker.on("message", (m: FromWorker) => {
        switch (m.t) {
          case "ready":
            ready = true;
            this.threadId = m.tid;
            resolve();
            return;
          case "failed":
            reject(new Error(`the WAL persister did not start: ${m.error}`));
            return;
          case "health":
            this.lastHealth = m.health;
            this.lastReportMs = Date.now();
            this.stats = m.stats;
            return;
          case "floor?":
            worker.postMessage({ t: "floor", id: m.id, floor: this.o.trimFloor(m.shard) } satisfies ToWorker);
            return;
          case "done": {
            const p = this.pending.get(m.id);
            this.pending.delete(m.id);
            if (m.error) p?.reject(new Error(m.error));
            else p?.resolve();
            return;
          }
        }
      });
      worker.on("error", (err) => {
        this.o.logger.error({ err }, "the WAL persister thread failed");
        if (!ready) reject(err);
      });
      worker.on("exit", (code) => {
        for (const p of this.pending.values()) p.reject(new Error("the WAL persister thread exited"));
        this.pending.clear();
        if (this.worker === worker) this.worker = null;
        if (this.stopping || !ready) return;
        // Tipping goes on without it (the WAL grows); a new thread picks up where it stopped.
        this.o.logger.error({ code }, "the WAL persister thread exited; restarting it");
        setTimeout(() => {
          if (this.stopping) return;
          this.spawn().then(
            () => {
              if (this.started) this.worker?.postMessage({ t: "start" } satisfies ToWorker);
            },
            (err) => this.o.logger.error({ err }, "restarting the WAL persister thread failed"),
          );
        }, this.o.data.options.retryMs).unref();
      });
    });
  }

  start(): void {
    this.started = true;
    this.worker?.postMessage({ t: "start" } satisfies ToWorker);
  }

  private request(t: "drain" | "stop"): Promise<void> {
    const worker = this.worker;
    if (!worker) return Promise.reject(new Error("the WAL persister thread is not running"));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ t, id } satisfies ToWorker);
    });
  }

  drain(): Promise<void> {
    return this.request("drain");
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const worker = this.worker;
    if (!worker) return;
    try {
      await this.request("stop");
    } finally {
      await worker.terminate();
    }
  }

  /** The worker's last report; its lag grows here too if the worker stops reporting. */
  health(): PersistHealth {
    const silentMs = Date.now() - this.lastReportMs;
    const stale = this.started && silentMs > 5 * this.o.data.reportMs + 1000;
    return stale
      ? { ...this.lastHealth, walLagMs: Math.max(this.lastHealth.walLagMs, silentMs) }
      : this.lastHealth;
  }
}
