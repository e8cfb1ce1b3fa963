// The local text model's pure analysis (what the AI worker threads run): every text of 1 to
// 10,000 characters, however odd, gets the documented shapes, never an exception; key phrases
// come from the text; the score is the weighted mean of its signals.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  keyPhrases,
  QUALITY_WEIGHTS,
  scoreQuality,
  suggestCtas,
  suggestTitles,
} from "../../src/ai/analyze.ts";

const ODD = [
  "😀😀😀",
  "a".repeat(10_000),
  "!!!".repeat(3000),
  "مرحبا بالعالم ١٢٣",
  "中文文本没有空格",
  "\n\n\t",
  "$$$",
  "123 456 789",
  "e.g. i.e. U.S.A. Dr. Smith",
  "<script>alert(1)</script>",
  "x",
  "The",
  "a-b-c-d-e-f",
];

function checkShapes(text: string, title: string): void {
  for (const count of [3, 5]) {
    const titles = suggestTitles(text, count);
    expect(titles).toHaveLength(count);
    expect(new Set(titles.map((t) => t.toLowerCase())).size).toBe(count);
    for (const t of titles) expect(t.length > 0 && t.length <= 100, t).toBe(true);
  }
  for (const goal of ["tip", "follow", "subscribe"] as const) {
    const ctas = suggestCtas(text, goal);
    expect(ctas.length).toBe(3);
    for (const c of ctas) expect(c.length > 0 && c.length <= 160, c).toBe(true);
  }
  const q = scoreQuality(title, text);
  expect(Number.isInteger(q.score) && q.score >= 0 && q.score <= 100).toBe(true);
  let mean = 0;
  for (const [k, w] of Object.entries(QUALITY_WEIGHTS)) {
    const v = q.signals[k as keyof typeof q.signals];
    expect(v >= 0 && v <= 1, k).toBe(true);
    mean += w * v;
  }
  expect(Math.abs(q.score - mean * 100)).toBeLessThanOrEqual(0.5);
}

describe("local text analysis", () => {
  it("answers odd texts (emoji, scripts without spaces, symbols, one long word) in shape", () => {
    for (const t of ODD) checkShapes(t, t.slice(0, 200));
  });

  it("answers any text in shape (fast-check, seed printed on failure)", () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 2000, unit: "grapheme" }),
        fc.string({ minLength: 1, maxLength: 200 }),
        (text, title) => checkShapes(text, title),
      ),
      { numRuns: 150 },
    );
  });

  it("finds the noun phrases a text is about, most central first", () => {
    const text =
      "Solar panels turn sunlight into electricity. Cheap solar panels made rooftop solar common. " +
      "A home battery stores the electricity for the evening, and the home battery pays off in years.";
    const phrases = keyPhrases(text, 5).map((p) => p.text.toLowerCase());
    expect(phrases.slice(0, 3)).toEqual(expect.arrayContaining(["solar panels", "home battery"]));
    for (const p of phrases) expect(text.toLowerCase()).toContain(p);
  });
});
