// Owns the OpenAI text model: title and CTA suggestions from the Chat Completions API (the
// official `openai` SDK), bounded by a timeout and answered by the local model whenever OpenAI
// fails (error, timeout, an answer that is not the JSON asked for). The quality score stays
// local in every case: it must be explainable from its signals.
import OpenAI from "openai";
import type { Logger } from "pino";
import { z } from "zod";
import { CTA_SUGGESTION_MAX_CHARS, TITLE_SUGGESTION_MAX_CHARS } from "./analyze.ts";
import type { CtaGoal, QualityReport, Suggestions, TextModel } from "./text-model.ts";

export interface OpenAiModelOptions {
  apiKey: string;
  model: string;
  /** Default: OpenAI's own API. */
  baseURL?: string;
  /** Bound on one request; past it the local model answers. */
  timeoutMs: number;
  /** Answers when OpenAI cannot, and scores quality. */
  fallback: TextModel;
  logger: Logger;
}

const answerShape = z.object({ suggestions: z.array(z.string()).min(1).max(20) });

const SYSTEM =
  "You write short copy for creators on a live-streaming tipping platform. Answer only with a JSON " +
  'object of the form {"suggestions": ["...", "..."]} and nothing else.';

const GOALS: Record<CtaGoal, string> = {
  tip: "send a small tip ($1 or $3)",
  follow: "follow the creator",
  subscribe: "subscribe to the creator",
};

export class OpenAiTextModel implements TextModel {
  private readonly client: OpenAI;
  /** Suggestions OpenAI gave, and requests the local model answered in its place (for /metrics). */
  answered = 0;
  fallbacks = 0;

  constructor(private readonly o: OpenAiModelOptions) {
    this.client = new OpenAI({
      apiKey: o.apiKey,
      ...(o.baseURL ? { baseURL: o.baseURL } : {}),
      timeout: o.timeoutMs,
      // One bounded try: the local model is the retry, and a request never waits twice the timeout.
      maxRetries: 0,
    });
  }

  async titles(text: string, count: number): Promise<Suggestions> {
    const prompt =
      `Suggest exactly ${count} distinct titles for the text below, each at most ` +
      `${TITLE_SUGGESTION_MAX_CHARS} characters, using the text's own key phrases.\n\nText:\n${text}`;
    try {
      const suggestions = await this.suggest(prompt, count, TITLE_SUGGESTION_MAX_CHARS);
      this.answered++;
      return { suggestions, source: "openai" };
    } catch (err) {
      this.fellBack("titles", err);
      return this.o.fallback.titles(text, count);
    }
  }

  async cta(text: string, goal: CtaGoal): Promise<Suggestions> {
    const prompt =
      `Suggest exactly 3 distinct calls to action, each at most ${CTA_SUGGESTION_MAX_CHARS} characters, ` +
      `asking the audience of the text below to ${GOALS[goal]}.\n\nText:\n${text}`;
    try {
      const suggestions = await this.suggest(prompt, 3, CTA_SUGGESTION_MAX_CHARS);
      this.answered++;
      return { suggestions, source: "openai" };
    } catch (err) {
      this.fellBack("cta", err);
      return this.o.fallback.cta(text, goal);
    }
  }

  quality(title: string, text: string): Promise<QualityReport> {
    return this.o.fallback.quality(title, text);
  }

  private async suggest(prompt: string, count: number, maxChars: number): Promise<string[]> {
    const completion = await this.client.chat.completions.create({
      model: this.o.model,
      messages: [
        { role: "system", content: SYSTEM },
        { role: "user", content: prompt },
      ],
      response_format: { type: "json_object" },
      temperature: 0.7,
    });
    const content = completion.choices[0]?.message?.content ?? "";
    const parsed = answerShape.parse(JSON.parse(content));
    const out = [
      ...new Set(parsed.suggestions.map((s) => s.replace(/\s+/g, " ").trim()).filter((s) => s.length > 0)),
    ].filter((s) => s.length <= maxChars);
    if (out.length < count) throw new Error(`OpenAI gave ${out.length} usable suggestions of ${count}`);
    return out.slice(0, count);
  }

  private fellBack(what: string, err: unknown): void {
    this.fallbacks++;
    const e = err as { status?: number; name?: string; message?: string; requestID?: string | null };
    this.o.logger.warn(
      { what, status: e.status, error: e.name, message: e.message, request_id: e.requestID ?? undefined },
      "OpenAI did not answer usably; the local text model answered instead",
    );
  }

  async close(): Promise<void> {
    await this.o.fallback.close();
  }
}
