// Owns the local text model: wink-nlp on a piscina pool of AI_THREADS worker threads, so the
// event loop that answers tips never runs NLP. Fully offline (the model is an npm package).
import { fileURLToPath } from "node:url";
import { Piscina } from "piscina";
import { AppError } from "../errors.ts";
import type { AiTask, CtaGoal, QualityReport, Suggestions, TextModel } from "./text-model.ts";

export interface LocalModelOptions {
  threads: number;
  /** Most tasks waiting for a thread; beyond it requests answer 503 instead of queueing forever. */
  queueMax: number;
}

export class LocalTextModel implements TextModel {
  private readonly pool: Piscina;

  constructor(private readonly o: LocalModelOptions) {
    this.pool = new Piscina({
      filename: fileURLToPath(new URL("./ai-worker.mjs", import.meta.url)),
      // Started on the first AI request (the model loads in ~0.3 s), not with every server.
      minThreads: 0,
      maxThreads: o.threads,
      maxQueue: o.queueMax,
      idleTimeout: 60_000,
    });
  }

  private async run<T>(task: AiTask): Promise<T> {
    if (this.pool.queueSize >= this.o.queueMax) {
      throw new AppError("unavailable", "the text model is busy; retry shortly");
    }
    return (await this.pool.run(task)) as T;
  }

  async titles(text: string, count: number): Promise<Suggestions> {
    return { suggestions: await this.run<string[]>({ op: "titles", text, count }), source: "local" };
  }

  async cta(text: string, goal: CtaGoal): Promise<Suggestions> {
    return { suggestions: await this.run<string[]>({ op: "cta", text, goal }), source: "local" };
  }

  quality(title: string, text: string): Promise<QualityReport> {
    return this.run<QualityReport>({ op: "quality", title, text });
  }

  /** The text's key phrases, best first (used by tests and the OpenAI prompt). */
  keyPhrases(text: string, max = 10): Promise<Array<{ text: string; score: number; count: number }>> {
    return this.run({ op: "keyPhrases", text, max });
  }

  /** Tasks waiting for a thread (for /metrics). */
  get queued(): number {
    return this.pool.queueSize;
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }
}
