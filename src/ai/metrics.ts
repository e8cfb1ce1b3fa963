// Owns the AI metrics at GET /metrics, read at scrape time from the models: the cache's hits and
// misses, tasks waiting for the local model's threads, and OpenAI's answers and fallbacks.
import client from "prom-client";
import type { CachedTextModel } from "./cache.ts";
import type { LocalTextModel } from "./local-model.ts";
import type { OpenAiTextModel } from "./openai-model.ts";

export interface AiModels {
  cache: CachedTextModel;
  local: LocalTextModel;
  openai: OpenAiTextModel | null;
}

/** A counter whose value is read from a model's own count when scraped. */
function countedFrom(registry: client.Registry, name: string, help: string, read: () => number): void {
  new client.Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

export function registerAiMetrics(registry: client.Registry, m: AiModels): void {
  countedFrom(
    registry,
    "threeam_ai_cache_hits_total",
    "AI requests answered from the cache",
    () => m.cache.hits,
  );
  countedFrom(
    registry,
    "threeam_ai_cache_misses_total",
    "AI requests the cache passed to a model",
    () => m.cache.misses,
  );
  countedFrom(
    registry,
    "threeam_ai_openai_answers_total",
    "Title and CTA suggestions OpenAI gave",
    () => m.openai?.answered ?? 0,
  );
  countedFrom(
    registry,
    "threeam_ai_openai_fallbacks_total",
    "OpenAI requests that failed, timed out or answered unusably (the local model answered)",
    () => m.openai?.fallbacks ?? 0,
  );
  new client.Gauge({
    name: "threeam_ai_queued_tasks",
    help: "AI tasks waiting for a thread of the local model (AI_QUEUE_MAX refuses beyond)",
    registers: [registry],
    collect() {
      this.set(m.local.queued);
    },
  });
}
