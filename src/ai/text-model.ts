// Owns the one small interface every text model implements (the local wink-nlp model on a
// worker pool, OpenAI), and the shapes of what they answer.

export type CtaGoal = "tip" | "follow" | "subscribe";

/** Where an answer came from: the local model, or OpenAI. */
export type AiSource = "local" | "openai";

export interface Suggestions {
  suggestions: string[];
  source: AiSource;
}

export interface QualityReport {
  /** 0-100: the weighted mean of the signals. */
  score: number;
  /** Each 0-1 (1 is best). */
  signals: {
    readability: number;
    length: number;
    keyword_coverage: number;
    title_length: number;
    sentence_length: number;
    lexical_diversity: number;
    formatting: number;
  };
  /** The weight of each signal in the score (they sum to 1). */
  weights: Record<string, number>;
  stats: {
    words: number;
    sentences: number;
    flesch_reading_ease: number;
    reading_time_s: number;
    key_phrases: string[];
  };
  /** What to change, the biggest gain first; empty when every signal is good. */
  tips: string[];
}

export interface TextModel {
  /** `count` titles of at most 100 characters, drawn from the text's own key phrases. */
  titles(text: string, count: number): Promise<Suggestions>;
  /** Calls to action for `goal`. */
  cta(text: string, goal: CtaGoal): Promise<Suggestions>;
  /** An explainable quality score of a title and its text. */
  quality(title: string, text: string): Promise<QualityReport>;
  close(): Promise<void>;
}

/** A task for the AI worker threads. */
export type AiTask =
  | { op: "titles"; text: string; count: number }
  | { op: "cta"; text: string; goal: CtaGoal }
  | { op: "quality"; title: string; text: string }
  | { op: "keyPhrases"; text: string; max: number };
