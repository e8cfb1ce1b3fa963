// Owns answering identical AI requests once: a bounded least-recently-used cache with a time to
// live in front of any TextModel. Identical requests in flight share one computation; failures
// are not kept.
import { createHash } from "node:crypto";
import type { CtaGoal, QualityReport, Suggestions, TextModel } from "./text-model.ts";

export interface CacheOptions {
  /** Most answers kept (0: no cache). */
  max: number;
  ttlMs: number;
}

export class CachedTextModel implements TextModel {
  /** Map order is recency order: the first key is the least recently used. */
  private readonly entries = new Map<string, { at: number; value: Promise<unknown> }>();
  hits = 0;
  misses = 0;

  constructor(
    private readonly inner: TextModel,
    private readonly o: CacheOptions,
  ) {}

  titles(text: string, count: number): Promise<Suggestions> {
    return this.cached(["titles", text, count], () => this.inner.titles(text, count));
  }

  cta(text: string, goal: CtaGoal): Promise<Suggestions> {
    return this.cached(["cta", text, goal], () => this.inner.cta(text, goal));
  }

  quality(title: string, text: string): Promise<QualityReport> {
    return this.cached(["quality", title, text], () => this.inner.quality(title, text));
  }

  get size(): number {
    return this.entries.size;
  }

  private cached<T>(request: unknown[], compute: () => Promise<T>): Promise<T> {
    if (this.o.max <= 0) return compute();
    const key = createHash("sha256").update(JSON.stringify(request)).digest("base64");
    const now = Date.now();
    const hit = this.entries.get(key);
    if (hit && now - hit.at < this.o.ttlMs) {
      this.hits++;
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit.value as Promise<T>;
    }
    this.misses++;
    const value = compute();
    this.entries.delete(key);
    this.entries.set(key, { at: now, value });
    value.catch(() => {
      if (this.entries.get(key)?.value === value) this.entries.delete(key);
    });
    while (this.entries.size > this.o.max) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
    return value;
  }

  close(): Promise<void> {
    this.entries.clear();
    return this.inner.close();
  }
}
