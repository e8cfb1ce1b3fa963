// Owns the AI endpoints: title and CTA suggestions and the quality score, for any user with a
// session, under a per-user AI budget on top of the general per-user limit.
import { z } from "zod";
import type { RateLimits } from "../http/rate-limit.ts";
import type { RouteDef } from "../http/router.ts";
import type { TextModel } from "./text-model.ts";

/** The limits on what a request may carry. */
export const AI_TEXT_MAX_CHARS = 10_000;
export const AI_TITLE_MAX_CHARS = 200;
export const TITLES_MIN = 3;
export const TITLES_MAX = 5;

const text = z.string().trim().min(1, "text is empty").max(AI_TEXT_MAX_CHARS);
const titlesBody = z.strictObject({
  text,
  count: z.number().int().min(TITLES_MIN).max(TITLES_MAX).optional(),
});
const ctaBody = z.strictObject({ text, goal: z.enum(["tip", "follow", "subscribe"]).optional() });
const qualityBody = z.strictObject({
  title: z.string().trim().min(1, "title is empty").max(AI_TITLE_MAX_CHARS),
  text,
});

export interface AiRouteDeps {
  model: TextModel;
  limits: RateLimits;
}

export function aiRoutes(d: AiRouteDeps): RouteDef[] {
  return [
    {
      method: "post",
      path: "/api/ai/titles",
      auth: "user",
      doc: {
        summary: "Title suggestions for a text",
        body: titlesBody,
        response: { status: 200, description: "title suggestions for a text" },
      },
      async handler(ctx) {
        const b = titlesBody.parse(ctx.body);
        await d.limits.consume("ai", ctx.user!.sub);
        return { status: 200, body: await d.model.titles(b.text, b.count ?? TITLES_MIN) };
      },
    },
    {
      method: "post",
      path: "/api/ai/cta",
      auth: "user",
      doc: {
        summary: "Calls to action for a text",
        body: ctaBody,
        response: { status: 200, description: "calls to action for a text" },
      },
      async handler(ctx) {
        const b = ctaBody.parse(ctx.body);
        await d.limits.consume("ai", ctx.user!.sub);
        return { status: 200, body: await d.model.cta(b.text, b.goal ?? "tip") };
      },
    },
    {
      method: "post",
      path: "/api/ai/quality",
      auth: "user",
      doc: {
        summary: "A quality score with signals and tips",
        body: qualityBody,
        response: { status: 200, description: "a quality score with signals and tips" },
      },
      async handler(ctx) {
        const b = qualityBody.parse(ctx.body);
        await d.limits.consume("ai", ctx.user!.sub);
        return { status: 200, body: await d.model.quality(b.title, b.text) };
      },
    },
  ];
}
