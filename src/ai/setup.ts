// Owns choosing the text model from configuration: the local wink-nlp model on its thread pool,
// with OpenAI in front of it when OPENAI_API_KEY is set, and the bounded cache in front of both.
import type { Logger } from "pino";
import type { Config } from "../config.ts";
import { CachedTextModel } from "./cache.ts";
import { LocalTextModel } from "./local-model.ts";
import { OpenAiTextModel } from "./openai-model.ts";
import type { AiModels } from "./metrics.ts";
import type { TextModel } from "./text-model.ts";

export interface TextModels extends AiModels {
  /** What routes use: the cache in front of OpenAI (when configured) in front of the local model. */
  model: TextModel;
}

export function createTextModel(config: Config, logger: Logger): TextModels {
  const local = new LocalTextModel({ threads: config.AI_THREADS, queueMax: config.AI_QUEUE_MAX });
  let openai: OpenAiTextModel | null = null;
  if (config.OPENAI_API_KEY) {
    openai = new OpenAiTextModel({
      apiKey: config.OPENAI_API_KEY,
      model: config.OPENAI_MODEL,
      ...(config.OPENAI_BASE_URL ? { baseURL: config.OPENAI_BASE_URL } : {}),
      timeoutMs: config.OPENAI_TIMEOUT_MS,
      fallback: local,
      logger,
    });
    logger.info(
      { model: config.OPENAI_MODEL, base_url: config.OPENAI_BASE_URL ?? "https://api.openai.com/v1" },
      "AI: titles and CTAs from OpenAI (the local model answers when it fails)",
    );
  } else {
    logger.info(
      { threads: config.AI_THREADS },
      "AI: local text model (wink-nlp, offline); set OPENAI_API_KEY for OpenAI",
    );
  }
  const cache = new CachedTextModel(openai ?? local, {
    max: config.AI_CACHE_MAX,
    ttlMs: config.AI_CACHE_TTL_MS,
  });
  return { model: cache, cache, local, openai };
}
