// Owns the queue dashboard: bull-board (@bull-board/api with its Express adapter) over every
// BullMQ queue we run (`payouts` and `email`), on its own port (BULL_BOARD_PORT; 0 = off), admins only.
// A browser cannot send our bearer token on its own, so the token is exchanged once for a cookie:
// open `/?token=<admin access token>` and the dashboard checks it, sets it as an HttpOnly,
// SameSite=Strict cookie that lasts until the token expires, and redirects to the same path
// without it. Every request (pages and the dashboard's own API, which can retry or remove jobs) is
// checked again: a valid token (cookie or `Authorization: Bearer`) of a user whose role in our
// users table is admin and whose account is active; 401 otherwise, 403 for a non-admin.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createBullBoard } from "@bull-board/api";
import { BullMQAdapter } from "@bull-board/api/bullMQAdapter";
import { ExpressAdapter } from "@bull-board/express";
import type { Queue } from "bullmq";
import express, { type NextFunction, type Request, type Response } from "express";
import type { Logger } from "pino";
import type { TokenService } from "../auth/tokens.ts";
import { isAdmin, type RoleSource } from "../http/access.ts";

/** The cookie holding the admin's access token once exchanged. */
export const QUEUE_DASHBOARD_COOKIE = "threeam_board";
/** Longest token (and so cookie) accepted: a JWT is far shorter. */
const TOKEN_CHARS_MAX = 4096;

export interface QueueDashboardOptions {
  queues: Queue[];
  tokens: Pick<TokenService, "verify">;
  roles: RoleSource;
  logger: Logger;
  /** Mark the cookie Secure (behind TLS; NODE_ENV=production). */
  secureCookie: boolean;
}

export interface QueueDashboard {
  readonly port: number;
  close(): Promise<void>;
}

function cookieToken(header: string | undefined): string | null {
  if (!header) return null;
  for (const part of header.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === QUEUE_DASHBOARD_COOKIE) return decodeURIComponent(rest.join("="));
  }
  return null;
}

function refuse(res: Response, status: 401 | 403, message: string): void {
  res
    .status(status)
    .type("application/json")
    .send(JSON.stringify({ error: { code: status === 401 ? "unauthorized" : "forbidden", message } }));
}

export async function startQueueDashboard(
  o: QueueDashboardOptions,
  port: number,
  host: string,
): Promise<QueueDashboard> {
  const adapter = new ExpressAdapter();
  adapter.setBasePath("/");
  createBullBoard({
    queues: o.queues.map((q) => new BullMQAdapter(q)),
    serverAdapter: adapter,
    options: { uiConfig: { boardTitle: "3AM queues" } },
  });

  const app = express();
  app.disable("x-powered-by");
  app.use(async (req: Request, res: Response, next: NextFunction) => {
    try {
      const query = typeof req.query.token === "string" ? req.query.token : null;
      const auth = req.headers.authorization;
      const bearer = auth?.startsWith("Bearer ") ? auth.slice(7) : null;
      const token = query ?? bearer ?? cookieToken(req.headers.cookie);
      if (!token || token.length > TOKEN_CHARS_MAX) {
        return refuse(res, 401, "an admin access token is required: open /?token=<access token>");
      }
      let claims: Awaited<ReturnType<TokenService["verify"]>>;
      try {
        claims = await o.tokens.verify(token);
      } catch {
        return refuse(res, 401, "the access token is invalid or expired");
      }
      if (!(await isAdmin(o.roles, claims.sub))) return refuse(res, 403, "admins only");
      if (query !== null) {
        // The exchange: keep the token in a cookie and take it out of the address bar.
        const maxAge = Math.max(0, claims.exp - Math.floor(Date.now() / 1000));
        const flags = `HttpOnly; SameSite=Strict; Path=/; Max-Age=${maxAge}${o.secureCookie ? "; Secure" : ""}`;
        res.setHeader("set-cookie", `${QUEUE_DASHBOARD_COOKIE}=${encodeURIComponent(token)}; ${flags}`);
        const url = new URL(req.originalUrl, "http://dashboard");
        url.searchParams.delete("token");
        res.redirect(303, `${url.pathname}${url.search}`);
        return;
      }
      next();
    } catch (err) {
      o.logger.error({ err }, "queue dashboard: checking access failed");
      res.status(503).type("application/json").send('{"error":{"code":"unavailable","message":"try again"}}');
    }
  });
  app.use("/", adapter.getRouter());

  const server: Server = createServer(app);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  o.logger.info(
    { port: bound },
    "queue dashboard (bull-board) listening: admins only, open /?token=<access token>",
  );
  return {
    port: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
