// Owns the Prometheus metrics served at GET /metrics (prom-client, one registry per server): the
// process's own (event-loop lag, GC pauses, heap), every API request by route and status with
// its duration, the WAL's group commits, and the ledger's and persister's state read at scrape
// time. Counting costs no lookup per request: each route keeps its labelled children.
import { readFileSync } from "node:fs";
import client from "prom-client";

export interface MetricsSources {
  /** WAL persistence, as /readyz reports it. */
  persist(): { walLagMs: number; unpersistedEntries: number; halted: number[] };
  ledger(): {
    recovering: boolean;
    accountsInMemory: number;
    /** The shards this process owns (their leases), each with its fencing token. */
    shardsOwned?: Array<{ shard: number; token: number }>;
    /** Shards spread over processes: calls forwarded to other shards' owners, credits sent and taken. */
    peers?: { forwarded: number; creditsSent: number; creditsAccepted: number; creditsAlreadyHad: number };
  };
  /** Money out, read at scrape time: payouts by status (Postgres) and payout jobs by state. */
  payouts?: {
    byStatus(): Promise<Record<string, number>>;
    jobs(): Promise<Record<string, number>>;
  };
  /** Other BullMQ queues by name (email, reconcile): jobs by state, read at scrape time. */
  queues?: Record<string, () => Promise<Record<string, number>>>;
  /** Named threads of this process by kernel thread id (Linux), whose CPU is read at scrape time. */
  threads?: () => Record<string, number | null | undefined>;
  /** Open WebSocket connections and feed subscribers, read at scrape time. */
  live?: () => { connections: number; subscribers: number };
}

/** What a reconcile run found (the job's report, summed): counts by kind of discrepancy. */
export type ReconcileFindings = Record<string, number>;

/** Counts one route's requests; `done` once the answer is written (or the client went away). */
export interface RouteMeter {
  done(status: number | undefined, seconds: number): void;
}

export class Metrics {
  readonly registry = new client.Registry();
  private readonly requests: client.Counter<"route" | "status">;
  private readonly duration: client.Histogram<"route">;
  private readonly flushSeconds: client.Histogram;
  private readonly flushEvents: client.Counter;
  private readonly flushFailures: client.Counter;
  private readonly payoutSeconds: client.Histogram;
  private readonly providerErrors: client.Counter<"provider" | "code">;
  private readonly transactions: client.Counter<"type" | "outcome" | "code">;
  /** The transactions counter's children by "type outcome code": labels() builds a label object
   * and its hash on every call, once per ledger command otherwise. */
  private readonly transactionChildren = new Map<string, client.Counter.Internal>();
  private readonly fraudTriggers: client.Counter<"rule" | "severity" | "action">;
  private readonly reconcileRuns: client.Counter<"result">;
  private readonly reconcileFound: client.Gauge<"kind">;
  private readonly reconcileLast: client.Gauge;

  constructor(sources: MetricsSources) {
    const registers = [this.registry];
    client.collectDefaultMetrics({ register: this.registry });
    this.requests = new client.Counter({
      name: "threeam_http_requests_total",
      help: "API requests answered, by route and status (status 0: the client went away first)",
      labelNames: ["route", "status"],
      registers,
    });
    this.duration = new client.Histogram({
      name: "threeam_http_request_duration_seconds",
      help: "Time from a request's arrival to its answer, by route",
      labelNames: ["route"],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.flushSeconds = new client.Histogram({
      name: "threeam_wal_flush_duration_seconds",
      help: "One group commit: every shard's pending events appended to the Redis WAL in one command",
      buckets: [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
      registers,
    });
    this.flushEvents = new client.Counter({
      name: "threeam_wal_events_total",
      help: "Ledger events made durable in the Redis WAL",
      registers,
    });
    this.flushFailures = new client.Counter({
      name: "threeam_wal_flush_failures_total",
      help: "Group commits Redis did not confirm (the ledger answered unavailable and recovered)",
      registers,
    });
    new client.Gauge({
      name: "threeam_wal_lag_seconds",
      help: "Age of the oldest WAL entry not yet persisted to Postgres",
      registers,
      collect() {
        this.set(sources.persist().walLagMs / 1000);
      },
    });
    new client.Gauge({
      name: "threeam_wal_unpersisted_entries",
      help: "WAL entries not yet persisted to Postgres",
      registers,
      collect() {
        this.set(sources.persist().unpersistedEntries);
      },
    });
    new client.Gauge({
      name: "threeam_persist_halted_streams",
      help: "WAL streams whose persistence stopped on a version conflict (an alarm: never overwritten)",
      registers,
      collect() {
        this.set(sources.persist().halted.length);
      },
    });
    if (sources.threads) {
      const threads = sources.threads;
      new client.Gauge({
        name: "threeam_thread_cpu_seconds",
        help: "CPU time (user + system) of this process's named threads: the event loop (main) and the WAL persister",
        labelNames: ["thread", "tid"],
        registers,
        collect() {
          this.reset();
          for (const [thread, tid] of Object.entries(threads())) {
            const s = tid ? threadCpuSeconds(tid) : null;
            if (s !== null) this.set({ thread, tid: String(tid) }, s);
          }
        },
      });
    }
    new client.Gauge({
      name: "threeam_ledger_recovering",
      help: "1 while the ledger rebuilds memory from Postgres and the WAL (commands answer unavailable)",
      registers,
      collect() {
        this.set(sources.ledger().recovering ? 1 : 0);
      },
    });
    this.payoutSeconds = new client.Histogram({
      name: "threeam_payout_duration_seconds",
      help: "Time from a withdrawal to its payout paid",
      buckets: [1, 5, 15, 30, 60, 300, 900, 3600, 6 * 3600, 24 * 3600, 3 * 24 * 3600],
      registers,
    });
    this.providerErrors = new client.Counter({
      name: "threeam_payout_provider_errors_total",
      help: "Failed provider calls of the payout worker (in this process), by provider and error code",
      labelNames: ["provider", "code"],
      registers,
    });
    const payouts = sources.payouts;
    if (payouts) {
      new client.Gauge({
        name: "threeam_payouts",
        help: "Payouts by status (Postgres)",
        labelNames: ["status"],
        registers,
        async collect() {
          const counts = await payouts.byStatus().catch(() => null);
          if (!counts) return;
          this.reset();
          for (const [status, n] of Object.entries(counts)) this.set({ status }, n);
        },
      });
    }
    const queues: Record<string, () => Promise<Record<string, number>>> = {
      ...(payouts ? { payouts: () => payouts.jobs() } : {}),
      ...sources.queues,
    };
    if (Object.keys(queues).length > 0) {
      new client.Gauge({
        name: "threeam_queue_jobs",
        help: "Jobs of each BullMQ queue by state (waiting, active, delayed, failed)",
        labelNames: ["queue", "state"],
        registers,
        async collect() {
          await Promise.all(
            Object.entries(queues).map(async ([queue, read]) => {
              const counts = await read().catch(() => null);
              if (!counts) return;
              for (const [state, n] of Object.entries(counts)) this.set({ queue, state }, n);
            }),
          );
        },
      });
    }
    const live = sources.live;
    if (live) {
      new client.Gauge({
        name: "threeam_ws_connections",
        help: "Open WebSocket connections (/ws)",
        registers,
        collect() {
          this.set(live().connections);
        },
      });
      new client.Gauge({
        name: "threeam_feed_subscribers",
        help: "WebSocket connections subscribed to a creator's tip feed (overlays included)",
        registers,
        collect() {
          this.set(live().subscribers);
        },
      });
    }
    this.transactions = new client.Counter({
      name: "threeam_transactions_total",
      help: "Ledger commands by type and outcome: completed, replayed (a retried idempotency key), refused (code: the refusal) or failed (unavailable, internal)",
      labelNames: ["type", "outcome", "code"],
      registers,
    });
    this.fraudTriggers = new client.Counter({
      name: "threeam_fraud_triggers_total",
      help: "Fraud rules triggered (each a fraud_logs row), by rule, severity and action, as the WAL confirms them",
      labelNames: ["rule", "severity", "action"],
      registers,
    });
    this.reconcileRuns = new client.Counter({
      name: "threeam_reconcile_runs_total",
      help: "Reconcile jobs finished, by result: ok, discrepancies, error",
      labelNames: ["result"],
      registers,
    });
    this.reconcileFound = new client.Gauge({
      name: "threeam_reconcile_discrepancies",
      help: "Discrepancies the last reconcile found, by kind (0 when it found none)",
      labelNames: ["kind"],
      registers,
    });
    this.reconcileLast = new client.Gauge({
      name: "threeam_reconcile_last_run_timestamp_seconds",
      help: "When the last reconcile job finished (Unix time)",
      registers,
    });
    this.reconcileFound.set({ kind: "total" }, 0);
    new client.Gauge({
      name: "threeam_shard_fencing_token",
      help: "The fencing token of each shard this process owns (one series per owned shard)",
      labelNames: ["shard"],
      registers,
      collect() {
        this.reset();
        for (const o of sources.ledger().shardsOwned ?? []) this.set({ shard: String(o.shard) }, o.token);
      },
    });
    new client.Gauge({
      name: "threeam_shards_owned",
      help: "How many ledger shards this process owns",
      registers,
      collect() {
        this.set(sources.ledger().shardsOwned?.length ?? 0);
      },
    });
    new client.Counter({
      name: "threeam_peer_calls_total",
      help: "Shards spread over processes: commands and reads forwarded to another shard's owner (forwarded), tip credits sent to another process and confirmed (credit_sent), taken from one (credit_taken), and taken again but recognised (credit_already_had)",
      labelNames: ["kind"],
      registers,
      collect() {
        const p = sources.ledger().peers;
        if (!p) return;
        this.reset();
        this.inc({ kind: "forwarded" }, p.forwarded);
        this.inc({ kind: "credit_sent" }, p.creditsSent);
        this.inc({ kind: "credit_taken" }, p.creditsAccepted);
        this.inc({ kind: "credit_already_had" }, p.creditsAlreadyHad);
      },
    });
    new client.Gauge({
      name: "threeam_ledger_accounts_in_memory",
      help: "Accounts held by the shard actors",
      registers,
      collect() {
        this.set(sources.ledger().accountsInMemory);
      },
    });
  }

  /** A payout reached paid this long after its withdrawal (the seed's "average payout time"). */
  payoutPaid(seconds: number): void {
    this.payoutSeconds.observe(seconds);
  }

  /** A ledger command's outcome; code is the refusal's (or "none"). */
  transaction(type: string, outcome: "completed" | "replayed" | "refused" | "failed", code = "none"): void {
    const k = `${type} ${outcome} ${code}`;
    let c = this.transactionChildren.get(k);
    if (!c) {
      c = this.transactions.labels(type, outcome, code);
      this.transactionChildren.set(k, c);
    }
    c.inc();
  }

  /** A fraud rule triggered (a fraud_logs row made durable). */
  fraudTriggered(rule: string, severity: string, action: string): void {
    this.fraudTriggers.labels(rule, severity, action).inc();
  }

  /** A reconcile job finished: its findings by kind (empty: none), or null when it failed. */
  reconciled(findings: ReconcileFindings | null): void {
    this.reconcileLast.set(Date.now() / 1000);
    if (!findings) {
      this.reconcileRuns.labels("error").inc();
      return;
    }
    this.reconcileFound.reset();
    let total = 0;
    for (const [kind, n] of Object.entries(findings)) {
      this.reconcileFound.set({ kind }, n);
      total += n;
    }
    this.reconcileFound.set({ kind: "total" }, total);
    this.reconcileRuns.labels(total > 0 ? "discrepancies" : "ok").inc();
  }

  /** A provider call of the payout worker failed with this code. */
  providerError(provider: string, code: string): void {
    this.providerErrors.labels(provider, code).inc();
  }

  route(name: string): RouteMeter {
    const timer = this.duration.labels(name);
    const byStatus = new Map<number, client.Counter.Internal>();
    return {
      done: (status, seconds) => {
        const s = status ?? 0;
        let c = byStatus.get(s);
        if (!c) {
          c = this.requests.labels(name, String(s));
          byStatus.set(s, c);
        }
        c.inc();
        timer.observe(seconds);
      },
    };
  }

  walFlush(seconds: number, events: number, ok: boolean): void {
    this.flushSeconds.observe(seconds);
    if (ok) this.flushEvents.inc(events);
    else this.flushFailures.inc();
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** Clock ticks per second of /proc's CPU times (USER_HZ: 100 on every Linux Node runs on). */
const USER_HZ = 100;

/** A thread of this process's CPU seconds from /proc (Linux); null where it cannot be read. */
function threadCpuSeconds(tid: number): number | null {
  try {
    const s = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    // After "tid (comm) ": utime is field 11, stime 12.
    return (Number(f[11]) + Number(f[12])) / USER_HZ;
  } catch {
    return null;
  }
}
