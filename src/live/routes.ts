// Owns the HTTP side of live: a creator's tip history (the feed as Postgres keeps it, for a
// client told to `reset`), the overlay key endpoint, and the overlay page itself.
import { randomBytes } from "node:crypto";
import type { TemplatedApp } from "uWebSockets.js";
import type { Logger } from "pino";
import { z } from "zod";
import { AppError } from "../errors.ts";
import { type RoleSource, requireSelfOrAdmin, uuidFrom } from "../http/access.ts";
import { type Reply, sendError, SECURITY_HEADERS } from "../http/respond.ts";
import type { RouteDef } from "../http/router.ts";
import type { UserStore } from "../users/user-store.ts";
import type { OverlayKeys } from "./overlay-keys.ts";
import { overlayPage } from "./overlay-page.ts";
import type { TipFeed } from "./tip-feed.ts";

/** Most tips one GET /api/payments/tips returns. */
export const TIPS_PAGE_MAX = 200;

export interface LiveRouteDeps {
  feed: TipFeed;
  users: UserStore;
  roles: RoleSource;
  overlayKeys: OverlayKeys;
  /** Closes the sockets that used a creator's previous overlay key. */
  revokeOverlay(creatorId: string): void;
  publicBaseUrl: string | undefined;
}

export function liveRoutes(d: LiveRouteDeps): RouteDef[] {
  const tipsQuery = z.strictObject({
    creator_id: z.uuid(),
    after_seq: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
    limit: z.coerce.number().int().min(1).max(TIPS_PAGE_MAX).default(50),
  });
  return [
    {
      method: "get",
      path: "/api/payments/tips",
      auth: "user",
      doc: {
        summary: "A creator's tip feed history (owner or admin)",
        query: tipsQuery,
        response: { status: 200, description: "tips with their feed numbers" },
      },
      async handler(ctx) {
        const q = tipsQuery.parse(Object.fromEntries(ctx.req.query));
        const creatorId = q.creator_id.toLowerCase();
        await requireSelfOrAdmin(ctx, d.roles, creatorId);
        const tips = await d.feed.history(creatorId, q.after_seq, q.limit);
        return { status: 200, body: { creator_id: creatorId, tips } };
      },
    },
    {
      method: "post",
      path: "/api/users/:userId/overlay-key",
      auth: "user",
      doc: {
        summary: "A new overlay key and URL for OBS (creator; replaces the old key)",
        response: { status: 201, description: "the overlay URL and key" },
      },
      async handler(ctx) {
        const id = uuidFrom(ctx, 0, "userId");
        await requireSelfOrAdmin(ctx, d.roles, id);
        const u = await d.users.byId(id);
        if (!u) throw new AppError("not_found", "user not found");
        if (u.role !== "creator") throw new AppError("forbidden", "only creators have an overlay");
        const key = await d.overlayKeys.create(id);
        d.revokeOverlay(id);
        const base = d.publicBaseUrl ?? `http://${ctx.req.headers.get("host") ?? "localhost"}`;
        const url = `${base.replace(/\/$/, "")}/overlay/${encodeURIComponent(u.username)}?key=${encodeURIComponent(key)}`;
        return { status: 201, body: { overlay_url: url, overlay_key: key } };
      },
    },
  ];
}

/** GET /overlay/:username?key=: the page, only for the key of that creator. */
export function registerOverlayPage(app: TemplatedApp, overlayKeys: OverlayKeys, logger: Logger): void {
  app.get("/overlay/:username", (res, req) => {
    const reply: Reply = { res, aborted: false };
    res.onAborted(() => {
      reply.aborted = true;
    });
    const username = req.getParameter(0) ?? "";
    const key = new URLSearchParams(req.getQuery() ?? "").get("key") ?? "";
    overlayKeys.resolve(key).then(
      (o) => {
        if (reply.aborted) return;
        if (!o || o.username.toLowerCase() !== decodeURIComponent(username).toLowerCase()) {
          sendError(
            reply,
            new AppError("unauthorized", "this overlay key is not valid for this creator"),
            logger,
          );
          return;
        }
        const nonce = randomBytes(16).toString("base64");
        const html = overlayPage({ username: o.username, nonce });
        res.cork(() => {
          res.writeStatus("200 OK");
          for (const [k, v] of SECURITY_HEADERS) {
            // The page is meant to be framed by OBS and to run its own inline script and style.
            if (k === "Content-Security-Policy" || k === "X-Frame-Options") continue;
            res.writeHeader(k, v);
          }
          res.writeHeader(
            "Content-Security-Policy",
            `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; base-uri 'none'; form-action 'none'`,
          );
          res.writeHeader("Content-Type", "text/html; charset=utf-8");
          res.writeHeader("Cache-Control", "no-store");
          res.end(html);
        });
        reply.aborted = true;
      },
      (err) => sendError(reply, err, logger),
    );
  });
}
