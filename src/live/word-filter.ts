// Owns masking words in user text shown on a stream (tip messages on feeds and overlays): each
// listed word, whole and in any case, becomes asterisks. The stored message is never changed.
export type WordFilter = (text: string) => string;

export function wordFilter(words: readonly string[]): WordFilter {
  const list = words.map((w) => w.trim()).filter((w) => w.length > 0);
  if (list.length === 0) return (t) => t;
  const escaped = list.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  // Unicode-aware word edges: a listed word inside a longer word is left alone.
  const re = new RegExp(`(?<![\\p{L}\\p{N}_])(?:${escaped.join("|")})(?![\\p{L}\\p{N}_])`, "giu");
  return (t) => t.replace(re, (m) => "*".repeat([...m].length));
}
