// Owns the local text model's work: key phrases, title and CTA suggestions, and an explainable
// quality score, all from wink-nlp's English model (tokens, parts of speech, sentences,
// readability). Runs inside the AI worker threads (ai-worker.mjs), never on the request loop:
// a 10,000-character text takes a few milliseconds, and a burst of them would delay every tip.
import winkNLP from "wink-nlp";
import model from "wink-eng-lite-web-model";
import type { AiTask, CtaGoal, QualityReport } from "./text-model.ts";

const nlp = winkNLP(model);
const its = nlp.its;

/** Longest title suggestion, in characters (the contract). */
export const TITLE_SUGGESTION_MAX_CHARS = 100;
/** Longest CTA suggestion, in characters. */
export const CTA_SUGGESTION_MAX_CHARS = 160;

interface Tok {
  text: string;
  lower: string;
  lemma: string;
  pos: string;
  word: boolean;
  stop: boolean;
  upper: boolean;
}

interface Analysis {
  tokens: Tok[];
  sentences: number;
  fres: number;
  readingTimeSecs: number;
}

function analyse(text: string): Analysis {
  const doc = nlp.readDoc(text);
  const t = doc.tokens();
  const texts = t.out();
  const pos = t.out(its.pos) as string[];
  const types = t.out(its.type) as string[];
  // The types declare lemma with an addons parameter the out() overloads do not accept.
  const lemmas = t.out(its.lemma as unknown as typeof its.pos) as string[];
  const stops = t.out(its.stopWordFlag) as unknown as boolean[];
  const cases = t.out(its.case) as string[];
  const tokens: Tok[] = texts.map((x, i) => ({
    text: x,
    lower: x.toLowerCase(),
    lemma: (lemmas[i] ?? x).toLowerCase(),
    pos: pos[i] ?? "X",
    word: types[i] === "word",
    stop: stops[i] === true,
    upper: cases[i] === "upperCase",
  }));
  const stats = doc.out(its.readabilityStats) as unknown as { fres: number; readingTimeSecs: number };
  return {
    tokens,
    sentences: Math.max(1, doc.sentences().length()),
    fres: stats.fres,
    readingTimeSecs: stats.readingTimeSecs,
  };
}

export interface KeyPhrase {
  /** As it most often appears in the text. */
  text: string;
  score: number;
  count: number;
}

const isContent = (t: Tok) => t.word && !t.stop && t.text.length >= 2 && /\p{L}/u.test(t.text);
const isNounish = (t: Tok) => t.pos === "NOUN" || t.pos === "PROPN";

/**
 * Key phrases: runs of adjectives and nouns ending in a noun (the noun phrases a reader would
 * name the text by), scored by how often their words occur in the text (RAKE's idea with parts
 * of speech in place of a stop list), best first.
 */
function keyPhrasesOf(a: Analysis, max: number): Array<KeyPhrase & { words: string[] }> {
  const freq = new Map<string, number>();
  for (const t of a.tokens) if (isContent(t)) freq.set(t.lemma, (freq.get(t.lemma) ?? 0) + 1);
  const found = new Map<
    string,
    { forms: Map<string, number>; count: number; first: number; words: string[] }
  >();
  // Every part of a run that ends in a noun counts as an occurrence: the tagger sometimes reads
  // a verb as a noun ("a home battery stores"), and the phrase inside it still adds up.
  const flush = (run: Tok[], at: number) => {
    for (let start = 0; start < run.length; start++) {
      for (let end = start; end < Math.min(run.length, start + 4); end++) {
        if (!isNounish(run[end]!)) continue;
        const words = run.slice(start, end + 1);
        const key = words.map((t) => t.lemma).join(" ");
        const form = words.map((t) => t.text).join(" ");
        const entry = found.get(key) ?? {
          forms: new Map(),
          count: 0,
          first: at,
          words: words.map((t) => t.lemma),
        };
        entry.count++;
        entry.forms.set(form, (entry.forms.get(form) ?? 0) + 1);
        found.set(key, entry);
      }
    }
  };
  let run: Tok[] = [];
  a.tokens.forEach((t, i) => {
    if (isContent(t) && (t.pos === "ADJ" || isNounish(t))) run.push(t);
    else {
      flush(run, i);
      run = [];
    }
  });
  flush(run, a.tokens.length);
  const ranked = [...found.values()]
    .map((e) => {
      const score = e.words.reduce((s, w) => s + (freq.get(w) ?? 0), 0) + (e.count - 1) * e.words.length;
      const form = [...e.forms.entries()].sort((x, y) => y[1] - x[1])[0]![0];
      return { text: form, score, count: e.count, first: e.first, words: e.words };
    })
    .sort((x, y) => y.score - x.score || x.first - y.first);
  // A single word already inside a chosen longer phrase adds nothing.
  const chosen: typeof ranked = [];
  for (const p of ranked) {
    if (chosen.length >= max) break;
    const inside = chosen.some((c) => p.words.every((w) => c.words.includes(w)));
    if (!inside) chosen.push(p);
  }
  return chosen.map(({ text, score, count, words }) => ({ text, score, count, words }));
}

export function keyPhrases(text: string, max = 10): KeyPhrase[] {
  return keyPhrasesOf(analyse(text), max).map(({ text: t, score, count }) => ({ text: t, score, count }));
}

const SMALL_WORDS = new Set([
  "a",
  "an",
  "and",
  "as",
  "at",
  "but",
  "by",
  "for",
  "in",
  "of",
  "on",
  "or",
  "the",
  "to",
  "vs",
]);

/** Title Case that leaves acronyms and mixed-case names as written. */
function titleCase(s: string): string {
  return s
    .split(/\s+/)
    .map((w, i) => {
      if (i > 0 && SMALL_WORDS.has(w.toLowerCase())) return w.toLowerCase();
      if (/[A-Z]/.test(w.slice(1))) return w;
      return w.charAt(0).toUpperCase() + w.slice(1);
    })
    .join(" ");
}

/** Cuts at a word boundary to at most `max` characters. */
function clip(s: string, max: number): string {
  const t = s.replace(/\s+/g, " ").trim();
  if (t.length <= max) return t;
  const cut = t.slice(0, max + 1);
  const at = cut.lastIndexOf(" ");
  return (at > max / 2 ? cut.slice(0, at) : t.slice(0, max)).replace(/[\s,;:–-]+$/, "");
}

/** Fallback phrases for texts without nouns: the first content words. */
function phrasesOrWords(a: Analysis, max: number): string[] {
  const phrases = keyPhrasesOf(a, max).map((p) => p.text);
  if (phrases.length > 0) return phrases;
  const words = a.tokens.filter(isContent).map((t) => t.text);
  if (words.length > 0) return [words.slice(0, 3).join(" ")];
  return [clip(a.tokens.map((t) => t.text).join(" "), 40) || "This"];
}

export function suggestTitles(text: string, count: number): string[] {
  const a = analyse(text);
  const [p1, p2, p3] = phrasesOrWords(a, 6).map(titleCase);
  const main = p1!;
  const candidates = [
    p2 ? `${main}: ${p2}` : null,
    `Why ${main} Matters`,
    p2 && p3 ? `${main}, ${p2} and ${p3}` : null,
    `A Practical Guide to ${main}`,
    p2 ? `What ${p2} Teaches Us About ${main}` : null,
    p2 ? `${main} and ${p2}` : null,
    `${main}, Explained`,
    `Notes on ${main}`,
    `Inside ${main}`,
    `Everything About ${main}`,
    `${main} Today`,
  ];
  const out: string[] = [];
  for (const c of candidates) {
    if (c === null) continue;
    const t = clip(c, TITLE_SUGGESTION_MAX_CHARS);
    if (t.length > 0 && !out.some((o) => o.toLowerCase() === t.toLowerCase())) out.push(t);
    if (out.length === count) break;
  }
  return out;
}

const CTA_TEMPLATES: Record<CtaGoal, Array<(p1: string, p2: string) => string>> = {
  tip: [
    (p1) => `Enjoyed this take on ${p1}? A $1 tip keeps it coming.`,
    (p1, p2) => `If ${p2} helped you, tip $3 and I'll go deeper on ${p1} next time.`,
    (p1) => `Every tip funds more ${p1}: send $1 if this was worth it.`,
  ],
  follow: [
    (p1) => `Follow for more on ${p1}.`,
    (_p1, p2) => `Want the next part on ${p2}? Hit follow so you don't miss it.`,
    (p1) => `Follow to catch every ${p1} session live.`,
  ],
  subscribe: [
    (p1) => `Subscribe for regular deep dives into ${p1}.`,
    (p1) => `Never miss a post on ${p1}: subscribe now.`,
    (p1, p2) => `Subscribe to get ${p2} and more on ${p1} first.`,
  ],
};

export function suggestCtas(text: string, goal: CtaGoal): string[] {
  const a = analyse(text);
  const phrases = phrasesOrWords(a, 4);
  // Proper names keep their case; common phrases read mid-sentence in lower case.
  const mid = (p: string) => (/^[A-Z]{2,}|^[A-Z][a-z]+ [A-Z]/.test(p) ? p : p.toLowerCase());
  const p1 = mid(phrases[0]!);
  const p2 = mid(phrases[1] ?? phrases[0]!);
  return CTA_TEMPLATES[goal].map((f) => clip(f(p1, p2), CTA_SUGGESTION_MAX_CHARS));
}

/** A signal in [0, 1] with two decimals; a text without words gives NaN ratios, which score 0. */
const round2 = (x: number) => (Number.isFinite(x) ? Math.round(Math.max(0, Math.min(1, x)) * 100) / 100 : 0);

/** Weights of the signals in the score; they sum to 1, so the score is their weighted mean. */
export const QUALITY_WEIGHTS = {
  readability: 0.15,
  length: 0.25,
  keyword_coverage: 0.2,
  title_length: 0.05,
  sentence_length: 0.05,
  lexical_diversity: 0.2,
  formatting: 0.1,
} as const;

type Signal = keyof typeof QUALITY_WEIGHTS;

const TIPS: Record<Signal, string> = {
  readability:
    "Make it easier to read: shorter sentences and everyday words (Flesch reading ease 50-90 is the target).",
  length: "Say more: around 150 words or more gives readers and search something to hold on to.",
  keyword_coverage: "Make the title name what the text is about: use its key phrases in the title.",
  title_length: "Aim for a title of 20 to 70 characters.",
  sentence_length: "Vary sentence length: aim for 8 to 25 words per sentence on average.",
  lexical_diversity: "Avoid repeating the same words: vary your wording.",
  formatting: "Drop the ALL CAPS and repeated punctuation (!!!): they read as spam.",
};

/** Moving-average type/token ratio over 50-word windows: length-independent word variety. */
function mattr(words: string[], window = 50): number {
  if (words.length === 0) return 0;
  if (words.length <= window) return new Set(words).size / words.length;
  let sum = 0;
  let n = 0;
  const counts = new Map<string, number>();
  for (let i = 0; i < words.length; i++) {
    counts.set(words[i]!, (counts.get(words[i]!) ?? 0) + 1);
    if (i >= window) {
      const out = words[i - window]!;
      const c = counts.get(out)! - 1;
      if (c === 0) counts.delete(out);
      else counts.set(out, c);
    }
    if (i >= window - 1) {
      sum += counts.size / window;
      n++;
    }
  }
  return sum / n;
}

export function scoreQuality(title: string, text: string): QualityReport {
  const a = analyse(text);
  const words = a.tokens.filter((t) => t.word);
  const contentLemmas = new Set(a.tokens.filter(isContent).map((t) => t.lemma));
  const phrases = keyPhrasesOf(a, 3);

  // Readability: Flesch reading ease; 50-90 is plain writing, lower is dense, far higher is babble.
  // Flesch is undefined without words (wink answers NaN): nothing readable.
  const fres = words.length > 0 && Number.isFinite(a.fres) ? a.fres : 0;
  const readability = fres < 50 ? fres / 50 : fres <= 90 ? 1 : 1 - (fres - 90) / 60;
  // Length: up to ~150 words adds; very long texts lose a little.
  const length = words.length < 150 ? words.length / 150 : words.length <= 3000 ? 1 : 0.8;
  // Keyword coverage: half for title words the text is about, half for the text's top key
  // phrases named in the title.
  const t = analyse(title);
  const titleLemmas = [...new Set(t.tokens.filter(isContent).map((x) => x.lemma))];
  const titleInText =
    titleLemmas.length === 0
      ? 0
      : titleLemmas.filter((l) => contentLemmas.has(l)).length / titleLemmas.length;
  const titleSet = new Set(titleLemmas);
  const phraseLemmas = phrases.map((p) =>
    analyse(p.text)
      .tokens.filter(isContent)
      .map((x) => x.lemma),
  );
  const phrasesInTitle =
    phraseLemmas.length === 0
      ? 0
      : phraseLemmas.filter((ls) => ls.some((l) => titleSet.has(l))).length / phraseLemmas.length;
  const keyword_coverage = (titleInText + phrasesInTitle) / 2;
  const tl = title.trim().length;
  const title_length = tl < 20 ? tl / 20 : tl <= 70 ? 1 : Math.max(0, 1 - (tl - 70) / 130);
  const perSentence = words.length / a.sentences;
  const sentence_length =
    perSentence < 8 ? perSentence / 8 : perSentence <= 25 ? 1 : Math.max(0, 1 - (perSentence - 25) / 25);
  const variety = mattr(words.map((w) => w.lemma));
  // Plain prose runs 0.65-0.85 over 50-word windows; keyword stuffing and repetition fall below 0.4.
  const lexical_diversity = (variety - 0.3) / 0.35;
  const caps = words.filter((w) => w.upper && w.text.length > 1).length / Math.max(1, words.length);
  const bangs = (text.match(/[!?]{2,}|\${2,}/g) ?? []).length / a.sentences;
  const formatting = 1 - Math.min(1, caps * 3 + bangs);

  const signals: Record<Signal, number> = {
    readability: round2(readability),
    length: round2(length),
    keyword_coverage: round2(keyword_coverage),
    title_length: round2(title_length),
    sentence_length: round2(sentence_length),
    lexical_diversity: round2(lexical_diversity),
    formatting: round2(formatting),
  };
  let score = 0;
  for (const k of Object.keys(QUALITY_WEIGHTS) as Signal[]) score += QUALITY_WEIGHTS[k] * signals[k];
  const tips = (Object.keys(signals) as Signal[])
    .filter((k) => signals[k] < 0.7)
    .sort((x, y) => QUALITY_WEIGHTS[y] * (1 - signals[y]) - QUALITY_WEIGHTS[x] * (1 - signals[x]))
    .map((k) => TIPS[k]);
  return {
    score: Math.round(score * 100),
    signals,
    weights: { ...QUALITY_WEIGHTS },
    stats: {
      words: words.length,
      sentences: a.sentences,
      flesch_reading_ease: Math.round(fres),
      reading_time_s: a.readingTimeSecs,
      key_phrases: phrases.map((p) => p.text),
    },
    tips,
  };
}

/** One task of the AI worker pool. */
export function runAiTask(task: AiTask): unknown {
  switch (task.op) {
    case "titles":
      return suggestTitles(task.text, task.count);
    case "cta":
      return suggestCtas(task.text, task.goal);
    case "quality":
      return scoreQuality(task.title, task.text);
    case "keyPhrases":
      return keyPhrases(task.text, task.max);
  }
}
