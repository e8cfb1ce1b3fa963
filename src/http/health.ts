// Owns the operational endpoints outside the API pipeline: /healthz (the process answers),
// /readyz (its dependencies, as the probes it is given report them) and /metrics (Prometheus,
// behind a bearer token when one is configured).
import { timingSafeEqual } from "node:crypto";
import { AppError } from "../errors.ts";
import type { Metrics } from "./metrics.ts";
import { type ErrorLogger, type Reply, sendError, sendJson, sendText } from "./respond.ts";
import type { HttpApp } from "./server.ts";

/** What /readyz asks; the composition root answers from the running core. */
export interface ReadinessProbes {
  postgres(): Promise<unknown>;
  redis(): Promise<unknown>;
  /** Only when the rate limits use a Redis of their own. */
  rateLimitRedis?: () => Promise<unknown>;
  /** Only when the live feeds use a Redis of their own: reported, not required (tips go on). */
  feedRedis?: () => Promise<unknown>;
  /** halted: why the ledger stopped for good (fenced by a newer owner, a broken invariant). */
  ledger(): { recovering: boolean; halted: string | null };
  /** The shards this process owns, with their fencing tokens, and its owner id. */
  shards?(): {
    owner: string;
    owned: Array<{ shard: number; token: number }>;
    /** Shards spread over processes: how many are alive, and this one's share of the shards. */
    spread?: { members: number; share: number };
  };
  persist(): { walLagMs: number; unpersistedEntries: number; halted: number[] };
}

/** A probe that does not answer within this is reported down. */
const PROBE_TIMEOUT_MS = 2000;

export function registerHealth(app: Pick<HttpApp, "get">, probes: ReadinessProbes): void {
  app.get("/healthz", (res) => {
    const reply: Reply = { res, aborted: false };
    sendJson(reply, 200, { status: "ok" });
  });
  app.get("/readyz", (res) => {
    const reply: Reply = { res, aborted: false };
    res.onAborted(() => {
      reply.aborted = true;
    });
    void readiness(probes).then((r) => sendJson(reply, r.status === "ready" ? 200 : 503, r));
  });
}

/** GET /metrics; with `token` set, Prometheus must send it as a bearer token. */
export function registerMetrics(
  app: Pick<HttpApp, "get">,
  metrics: Metrics,
  token: string | undefined,
  logger: ErrorLogger,
): void {
  const expected = token ? `Bearer ${token}` : null;
  app.get("/metrics", (res, req) => {
    const reply: Reply = { res, aborted: false };
    res.onAborted(() => {
      reply.aborted = true;
    });
    if (expected && !safeEqual(req.getHeader("authorization"), expected)) {
      sendError(
        reply,
        new AppError("unauthorized", "GET /metrics needs Authorization: Bearer <METRICS_TOKEN>"),
        logger,
      );
      return;
    }
    metrics.text().then(
      (text) => sendText(reply, 200, metrics.contentType, text),
      (err) => sendError(reply, err, logger),
    );
  });
}

async function readiness(probes: ReadinessProbes) {
  const within = <T>(p: Promise<T>) =>
    Promise.race([
      p,
      new Promise<never>((_, rej) => setTimeout(() => rej(new Error("timeout")), PROBE_TIMEOUT_MS)),
    ]).then(
      () => true,
      () => false,
    );
  const separate = probes.rateLimitRedis !== undefined;
  const [pg, redis, limits, feed] = await Promise.all([
    within(probes.postgres()),
    within(probes.redis()),
    probes.rateLimitRedis ? within(probes.rateLimitRedis()) : Promise.resolve(true),
    probes.feedRedis ? within(probes.feedRedis()) : Promise.resolve(true),
  ]);
  const ledger = probes.ledger();
  const persist = probes.persist();
  const shards = probes.shards?.();
  const ready = pg && redis && limits && !ledger.recovering && !ledger.halted && persist.halted.length === 0;
  return {
    status: ready ? "ready" : "not_ready",
    postgres: pg ? "up" : "down",
    redis: redis ? "up" : "down",
    ...(separate ? { rate_limit_redis: limits ? "up" : "down" } : {}),
    // A feed Redis that is down delays live frames (they wait, then come from Postgres); tips go on.
    ...(probes.feedRedis ? { feed_redis: feed ? "up" : "down" } : {}),
    ledger: {
      recovering: ledger.recovering,
      halted: ledger.halted,
      ...(shards
        ? {
            owner: shards.owner,
            shards_owned: shards.owned.map((o) => o.shard),
            fencing_tokens: Object.fromEntries(shards.owned.map((o) => [o.shard, o.token])),
            ...(shards.spread ? { processes: shards.spread.members, share: shards.spread.share } : {}),
          }
        : {}),
    },
    wal: {
      lag_ms: persist.walLagMs,
      unpersisted_entries: persist.unpersistedEntries,
      halted_shards: persist.halted,
    },
  };
}

function safeEqual(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}
