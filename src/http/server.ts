// Owns the HTTP server: uWebSockets.js (native only), routes, and starting/stopping it. Every
// route answers JSON; unknown routes answer 404 in the common error shape.
import type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket } from "uWebSockets.js";
import type { Logger } from "pino";
import type { Core } from "../app.ts";
import type { Config } from "../config.ts";
import { AppError } from "../errors.ts";
import { nativeUws } from "./native.ts";
import { type Reply, sendError, sendJson } from "./respond.ts";

export interface HttpDeps {
  config: Config;
  logger: Logger;
  core: Core;
}

export interface HttpServer {
  /** Listens; port 0 picks a free one. Resolves to the port. */
  listen(port: number, host?: string): Promise<number>;
  close(): Promise<void>;
}

type Handler = (reply: Reply, req: HttpRequest) => Promise<void> | void;

/** Wraps an async handler: abort tracking, and every failure through the one error mapper. */
function route(logger: Logger, handler: Handler) {
  return (res: HttpResponse, req: HttpRequest) => {
    const reply: Reply = { res, aborted: false };
    res.onAborted(() => {
      reply.aborted = true;
    });
    try {
      const p = handler(reply, req);
      if (p) p.catch((err) => sendError(reply, err, logger));
    } catch (err) {
      sendError(reply, err, logger);
    }
  };
}

export function createHttpServer(deps: HttpDeps): HttpServer {
  const uws = nativeUws();
  const app: TemplatedApp = uws.App();
  const { logger, core } = deps;

  app.get(
    "/healthz",
    route(logger, (reply) => sendJson(reply, 200, { status: "ok" })),
  );

  app.get(
    "/readyz",
    route(logger, async (reply) => {
      const timeout = <T>(p: Promise<T>) =>
        Promise.race([p, new Promise<never>((_, rej) => setTimeout(() => rej(new Error("timeout")), 2000))]);
      const [pg, redis] = await Promise.all([
        timeout(core.pool.query("SELECT 1")).then(
          () => true,
          () => false,
        ),
        timeout(core.redis.ping()).then(
          () => true,
          () => false,
        ),
      ]);
      const ledger = core.ledger.health();
      const persist = core.persister.health();
      const ready = pg && redis && !ledger.recovering && persist.halted.length === 0;
      sendJson(reply, ready ? 200 : 503, {
        status: ready ? "ready" : "not_ready",
        postgres: pg ? "up" : "down",
        redis: redis ? "up" : "down",
        ledger: { recovering: ledger.recovering },
        wal: {
          lag_ms: persist.walLagMs,
          unpersisted_entries: persist.unpersistedEntries,
          halted_shards: persist.halted,
        },
      });
    }),
  );

  app.any(
    "/*",
    route(logger, (_reply, req) => {
      throw new AppError("not_found", `no route for ${req.getMethod().toUpperCase()} ${req.getUrl()}`);
    }),
  );

  let token: us_listen_socket | null = null;
  return {
    listen(port, host = "0.0.0.0") {
      return new Promise((resolve, reject) => {
        app.listen(host, port, (t) => {
          if (!t) return reject(new Error(`cannot listen on ${host}:${port}`));
          token = t;
          resolve(uws.us_socket_local_port(t as never));
        });
      });
    },
    async close() {
      if (token) uws.us_listen_socket_close(token);
      token = null;
    },
  };
}
