// The AI endpoints over HTTP: shapes and limits, titles drawn from the text's key phrases, the
// quality score ordering a labelled set of good and poor texts, the OpenAI path through the
// local Chat Completions stand-in with its fallback to the local model, the bounded cache, and
// tips staying fast while a burst of AI requests runs on the worker pool.
import { randomUUID } from "node:crypto";
import { Worker } from "node:worker_threads";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type OpenAiStandin, startOpenAiStandin } from "../../src/standins/openai-standin.ts";
import { type Api, startApi } from "../helpers/api.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";

const SOURDOUGH = `Sourdough bread starts with a wild yeast starter. Feeding the sourdough starter every
day with flour and water keeps the wild yeast lively, and a lively starter gives the bread an open
crumb. Many bakers keep their starter in the fridge between bakes. Before mixing the dough, they
take the sourdough starter out and feed it twice. The dough then rests for a long, slow
fermentation, which is what gives sourdough bread its tangy flavour and its crisp crust. Rye flour
makes the starter more active; whole wheat flour makes the crumb denser. Once you understand the
starter, baking sourdough bread at home becomes a weekly habit rather than a weekend project.`;

/** Labelled texts: good ones are clear, on-topic, varied; poor ones are spam, junk or thin. */
const GOOD = [
  {
    title: "Sourdough Bread at Home: Taming the Wild Yeast Starter",
    text: SOURDOUGH,
  },
  {
    title: "How I Practise Guitar Scales Without Getting Bored",
    text: `Practising guitar scales does not have to be dull. I start every session with five minutes of
slow major scales, using a metronome at sixty beats per minute. Once my fingers are warm, I move
to the pentatonic scale and improvise short phrases over a backing track. The trick is to treat
scales as music rather than exercise. I pick one position of the scale each week and learn to
play a simple melody inside it. By the end of the month, those positions connect across the
neck, and solos stop feeling like random notes. If you only have ten minutes a day, spend them
on one scale played cleanly instead of five scales played badly. Record yourself once a week,
listen back, and note where your timing slips. Progress on the guitar comes from small,
deliberate steps repeated often.`,
  },
  {
    title: "Saving Energy at Home: Simple Changes That Cut the Bill",
    text: `Most homes waste energy in a few predictable places. Heating and cooling use the largest
share, so sealing gaps around windows and doors is the cheapest first step. A programmable
thermostat lowers the temperature while you sleep or work, and the savings add up over a
winter. Next, look at lighting: LED bulbs use a fraction of the energy of old bulbs and last for
years. Unplug chargers and devices that draw power on standby, or put them on a switched power
strip. Washing clothes in cold water saves more energy than most people expect, because heating
water is expensive. None of these changes requires a contractor, and together they can cut an
energy bill by a noticeable amount within a few months.`,
  },
];

const POOR = [
  {
    title: "BUY NOW!!!",
    text: "BUY NOW!!! BEST DEAL!!! CLICK CLICK CLICK!!! FREE FREE FREE!!! BUY NOW!!! LIMITED OFFER!!!",
  },
  { title: "hi", text: "hi" },
  {
    title: "Stuff",
    text: "good good good good good good good good good good good good good good good good good good good good good good good good good good good good good good.",
  },
  {
    title: "Cheap watches cheap watches",
    text: "cheap watches cheap watches cheap watches best cheap watches buy cheap watches now cheap watches cheap watches cheap watches online cheap watches",
  },
  {
    title: "asdf qwer zxcv",
    text: "asdf qwer zxcv $$$ ### @@@ !!! ??? asdf qwer zxcv $$$ ### @@@",
  },
];

let env: TestEnv;
let api: Api;
let user: { id: string; token: string };

beforeAll(async () => {
  env = await createTestEnv("ai");
  api = await startApi(env, { AI_THREADS: "1", AI_QUEUE_MAX: "1000" });
  user = await api.register();
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

const post = (a: Api, path: string, body: unknown, token: string | null = user.token) =>
  a.call("POST", path, { ...(token ? { token } : {}), body });

describe("shapes and limits", () => {
  it("asks for a session on every AI route (401 without one)", async () => {
    for (const path of ["/api/ai/titles", "/api/ai/cta", "/api/ai/quality"]) {
      const r = await post(api, path, { text: SOURDOUGH, title: "x" }, null);
      expect(r.status).toBe(401);
      expect(r.body.error.code).toBe("unauthorized");
    }
  });

  it("answers titles, CTAs and a quality report in their documented shapes", async () => {
    const t = await post(api, "/api/ai/titles", { text: SOURDOUGH });
    expect(t.status).toBe(200);
    expect(t.body.source).toBe("local");
    expect(t.body.suggestions).toHaveLength(3);
    const five = await post(api, "/api/ai/titles", { text: SOURDOUGH, count: 5 });
    expect(five.body.suggestions).toHaveLength(5);
    expect(new Set(five.body.suggestions).size).toBe(5);
    for (const s of five.body.suggestions) {
      expect(typeof s).toBe("string");
      expect(s.length).toBeGreaterThan(0);
      expect(s.length).toBeLessThanOrEqual(100);
    }
    for (const goal of ["tip", "follow", "subscribe", undefined]) {
      const c = await post(api, "/api/ai/cta", { text: SOURDOUGH, ...(goal ? { goal } : {}) });
      expect(c.status).toBe(200);
      expect(c.body.suggestions.length).toBeGreaterThanOrEqual(3);
      for (const s of c.body.suggestions) expect(s.toLowerCase()).toContain("sourdough");
      if (goal === "follow") expect(c.body.suggestions.join(" ").toLowerCase()).toContain("follow");
      if (goal === "subscribe") expect(c.body.suggestions.join(" ").toLowerCase()).toContain("subscribe");
      if (goal !== "follow" && goal !== "subscribe") expect(c.body.suggestions.join(" ")).toContain("tip");
    }
    const q = await post(api, "/api/ai/quality", { title: GOOD[0]!.title, text: SOURDOUGH });
    expect(q.status).toBe(200);
    expect(Number.isInteger(q.body.score)).toBe(true);
    expect(q.body.score).toBeGreaterThanOrEqual(0);
    expect(q.body.score).toBeLessThanOrEqual(100);
    for (const k of [
      "readability",
      "length",
      "keyword_coverage",
      "title_length",
      "sentence_length",
      "lexical_diversity",
      "formatting",
    ]) {
      expect(q.body.signals[k]).toBeGreaterThanOrEqual(0);
      expect(q.body.signals[k]).toBeLessThanOrEqual(1);
    }
    // Explainable: the score is the weighted mean of the signals it shows.
    const mean = Object.entries(q.body.weights as Record<string, number>).reduce(
      (s, [k, w]) => s + w * q.body.signals[k],
      0,
    );
    expect(Math.abs(q.body.score - mean * 100)).toBeLessThanOrEqual(0.5);
    expect(Array.isArray(q.body.tips)).toBe(true);
    expect(q.body.stats.words).toBeGreaterThan(100);
  });

  it("refuses empty, oversized and malformed requests with 400 (or 413 past the body limit)", async () => {
    const bad: Array<[string, unknown]> = [
      ["/api/ai/titles", { text: "" }],
      ["/api/ai/titles", { text: "   \n " }],
      ["/api/ai/titles", {}],
      ["/api/ai/titles", { text: "a".repeat(10_001) }],
      ["/api/ai/titles", { text: SOURDOUGH, count: 2 }],
      ["/api/ai/titles", { text: SOURDOUGH, count: 6 }],
      ["/api/ai/titles", { text: SOURDOUGH, count: 3.5 }],
      ["/api/ai/titles", { text: 42 }],
      ["/api/ai/titles", { text: SOURDOUGH, extra: true }],
      ["/api/ai/cta", { text: SOURDOUGH, goal: "donate" }],
      ["/api/ai/cta", { text: "" }],
      ["/api/ai/quality", { text: SOURDOUGH }],
      ["/api/ai/quality", { title: "", text: SOURDOUGH }],
      ["/api/ai/quality", { title: "t".repeat(201), text: SOURDOUGH }],
      ["/api/ai/quality", { title: "ok", text: "" }],
    ];
    for (const [path, body] of bad) {
      const r = await post(api, path, body);
      expect([path, body, r.status]).toEqual([path, body, 400]);
      expect(r.body.error.code).toBe("validation_error");
    }
    const huge = await post(api, "/api/ai/titles", { text: "a ".repeat(20_000) });
    expect(huge.status).toBe(413);
    // The limits themselves are allowed.
    const max = "Sourdough starter notes. ".repeat(400).slice(0, 10_000);
    expect((await post(api, "/api/ai/titles", { text: max })).status).toBe(200);
    expect((await post(api, "/api/ai/quality", { title: "t".repeat(200), text: "x" })).status).toBe(200);
  });

  it("limits AI requests per user (429 past RATE_LIMIT_AI_PER_MIN), other users unaffected", async () => {
    // A second server needs its own ledger (database and Redis prefix).
    const env2 = await createTestEnv("ai_limits");
    const limited = await startApi(env2, {
      RATE_LIMIT_IP_PER_MIN: "100000",
      RATE_LIMIT_USER_PER_MIN: "100000",
      RATE_LIMIT_AI_PER_MIN: "3",
      AI_QUEUE_MAX: "2",
    });
    try {
      const a = await limited.register();
      const b = await limited.register();
      for (let i = 0; i < 3; i++) {
        expect((await post(limited, "/api/ai/cta", { text: `hello ${i}` }, a.token)).status).toBe(200);
      }
      const r = await post(limited, "/api/ai/titles", { text: SOURDOUGH }, a.token);
      expect(r.status).toBe(429);
      expect(r.body.error.code).toBe("rate_limited");
      expect(r.headers.get("retry-after")).toBeTruthy();
      expect((await post(limited, "/api/ai/titles", { text: SOURDOUGH }, b.token)).status).toBe(200);
      // More AI work waiting than AI_QUEUE_MAX (2 here) answers 503 with Retry-After, not a longer queue.
      const c = await limited.register();
      const d = await limited.register();
      const many = await Promise.all(
        [c, d].flatMap((u) =>
          [0, 1, 2].map((i) =>
            post(
              limited,
              "/api/ai/quality",
              { title: "t", text: `${u.id} ${i} ${SOURDOUGH}`.repeat(20).slice(0, 10_000) },
              u.token,
            ),
          ),
        ),
      );
      const statuses = many.map((r) => r.status).sort();
      expect(statuses).toContain(503);
      expect(statuses.every((st) => st === 200 || st === 503)).toBe(true);
      const refused = many.find((r) => r.status === 503)!;
      expect(refused.body.error.code).toBe("unavailable");
      expect(refused.headers.get("retry-after")).toBeTruthy();
    } finally {
      await limited.close();
      await env2.cleanup();
    }
  });
});

describe("the local model", () => {
  it("draws titles from the text's own key phrases", async () => {
    const r = await post(api, "/api/ai/titles", { text: SOURDOUGH, count: 5 });
    const phrases = ["sourdough bread", "sourdough starter", "wild yeast", "starter"];
    for (const t of r.body.suggestions as string[]) {
      expect(
        phrases.some((p) => t.toLowerCase().includes(p)),
        t,
      ).toBe(true);
    }
    // The text's leading phrase (what it is most about) is in the first title.
    expect((r.body.suggestions[0] as string).toLowerCase()).toMatch(/sourdough/);
    const guitar = await post(api, "/api/ai/titles", { text: GOOD[1]!.text });
    for (const t of guitar.body.suggestions as string[]) expect(t.toLowerCase()).toMatch(/scale|guitar/);
  });

  it("scores every good text of the labelled set above every poor one, with tips for the poor", async () => {
    const score = async (x: { title: string; text: string }) => {
      const r = await post(api, "/api/ai/quality", x);
      expect(r.status).toBe(200);
      return r.body as { score: number; tips: string[]; signals: Record<string, number> };
    };
    const good = await Promise.all(GOOD.map(score));
    const poor = await Promise.all(POOR.map(score));
    const worstGood = Math.min(...good.map((g) => g.score));
    const bestPoor = Math.max(...poor.map((p) => p.score));
    expect(worstGood, `good ${good.map((g) => g.score)} poor ${poor.map((p) => p.score)}`).toBeGreaterThan(
      bestPoor + 10,
    );
    for (const g of good) expect(g.score).toBeGreaterThanOrEqual(75);
    for (const p of poor) {
      expect(p.score).toBeLessThan(65);
      expect(p.tips.length).toBeGreaterThan(0);
    }
    // The signals say why: the shouting spam is flagged for formatting, the repetition for variety.
    expect(poor[0]!.signals.formatting).toBeLessThan(0.3);
    expect(poor[2]!.signals.lexical_diversity).toBeLessThan(0.3);
    // A title about something else loses keyword coverage.
    const offTopic = await score({ title: "My Holiday in Lisbon", text: SOURDOUGH });
    expect(offTopic.signals.keyword_coverage).toBeLessThan(good[0]!.signals.keyword_coverage!);
  });

  it("answers identical requests from the bounded cache", async () => {
    const text = `${SOURDOUGH} ${randomUUID()}`;
    const cache = api.http.textModel as unknown as { hits: number; misses: number };
    const before = { hits: cache.hits, misses: cache.misses };
    const a = await post(api, "/api/ai/titles", { text });
    const b = await post(api, "/api/ai/titles", { text });
    expect(b.body).toEqual(a.body);
    expect(cache.misses - before.misses).toBe(1);
    expect(cache.hits - before.hits).toBe(1);
    const metrics = await (await fetch(`${api.base}/metrics`)).text();
    expect(Number(/^threeam_ai_cache_hits_total (\d+)$/m.exec(metrics)?.[1])).toBe(cache.hits);
    expect(metrics).toMatch(/^threeam_ai_queued_tasks \d+$/m);
  });
});

describe("OpenAI", () => {
  const KEY = "sk-test-standin-0123456789";
  let standin: OpenAiStandin;
  let openai: Api;
  let u: { token: string };
  let envOpenAi: TestEnv;

  beforeAll(async () => {
    standin = await startOpenAiStandin({ apiKey: KEY });
    envOpenAi = await createTestEnv("ai_openai");
    openai = await startApi(envOpenAi, {
      OPENAI_API_KEY: KEY,
      OPENAI_BASE_URL: standin.url,
      OPENAI_MODEL: "gpt-standin",
      OPENAI_TIMEOUT_MS: "500",
    });
    u = await openai.register();
  });
  afterAll(async () => {
    await openai?.close();
    await standin?.close();
    await envOpenAi?.cleanup();
  });

  it("asks OpenAI's Chat Completions API for titles and CTAs with the configured model and key", async () => {
    const text = `${SOURDOUGH} ${randomUUID()}`;
    const t = await post(openai, "/api/ai/titles", { text, count: 4 }, u.token);
    expect(t.status).toBe(200);
    expect(t.body.source).toBe("openai");
    expect(t.body.suggestions).toHaveLength(4);
    expect(t.body.suggestions[0]).toMatch(/^Title 1 from the stand-in: Sourdough bread starts/);
    const c = await post(openai, "/api/ai/cta", { text, goal: "follow" }, u.token);
    expect(c.body.source).toBe("openai");
    expect(c.body.suggestions[0]).toMatch(/^Call to action 1 from the stand-in/);
    const seen = standin.requests().filter((r) => r.prompt.includes(text));
    expect(seen).toHaveLength(2);
    expect(seen[0]!.model).toBe("gpt-standin");
    expect(seen[0]!.authorization).toBe(`Bearer ${KEY}`);
    expect(seen[1]!.prompt).toContain("follow the creator");
    // The same request again is answered from the cache: OpenAI is not asked twice.
    expect((await post(openai, "/api/ai/titles", { text, count: 4 }, u.token)).body).toEqual(t.body);
    expect(standin.requests().filter((r) => r.prompt.includes(text))).toHaveLength(2);
    // The quality score stays local and explainable.
    const q = await post(openai, "/api/ai/quality", { title: "Sourdough", text }, u.token);
    expect(q.body.signals.readability).toBeGreaterThan(0);
    expect(standin.requests().filter((r) => r.prompt.includes(text))).toHaveLength(2);
  });

  it("has a stand-in that answers like OpenAI: 401 for a wrong key, 400 for a bad body, 404 elsewhere", async () => {
    const call = (path: string, key: string, body: string) =>
      fetch(`${standin.url}${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body,
      });
    const ok = JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] });
    const wrongKey = await call("/chat/completions", "sk-wrong-key-000", ok);
    expect(wrongKey.status).toBe(401);
    expect((await wrongKey.json()).error.code).toBe("invalid_api_key");
    expect(wrongKey.headers.get("x-request-id")).toMatch(/^req_/);
    for (const bad of ["{", JSON.stringify({ model: "m" }), JSON.stringify({ model: 1, messages: [] })]) {
      const r = await call("/chat/completions", KEY, bad);
      expect(r.status).toBe(400);
      expect((await r.json()).error.type).toBe("invalid_request_error");
    }
    expect((await call("/embeddings", KEY, ok)).status).toBe(404);
    const good = await (await call("/chat/completions", KEY, ok)).json();
    expect(good.object).toBe("chat.completion");
    expect(JSON.parse(good.choices[0].message.content).suggestions.length).toBeGreaterThan(0);
  });

  it("falls back to the local model when OpenAI refuses the key", async () => {
    const env3 = await createTestEnv("ai_badkey");
    const wrong = await startApi(env3, {
      OPENAI_API_KEY: "sk-not-the-standin-key",
      OPENAI_BASE_URL: standin.url,
    });
    try {
      const w = await wrong.register();
      const r = await post(wrong, "/api/ai/cta", { text: SOURDOUGH }, w.token);
      expect([r.status, r.body.source]).toEqual([200, "local"]);
    } finally {
      await wrong.close();
      await env3.cleanup();
    }
  });

  it("falls back to the local model when OpenAI errors, times out or answers unusably", async () => {
    const cases: Array<[string, Parameters<OpenAiStandin["configure"]>[0]]> = [
      ["500", { failStatus: 500, failTimes: 1 }],
      ["429", { failStatus: 429, failTimes: 1 }],
      ["timeout", { delayMs: 3000 }],
      ["not JSON", { content: "Here are some titles: one, two, three" }],
      ["wrong JSON", { content: JSON.stringify({ titles: ["a"] }) }],
    ];
    for (const [what, behaviour] of cases) {
      standin.configure(behaviour);
      const text = `${SOURDOUGH} ${randomUUID()}`;
      const before = standin.requests().length;
      const started = performance.now();
      const r = await post(openai, "/api/ai/titles", { text }, u.token);
      const ms = performance.now() - started;
      standin.configure({ failTimes: 0, delayMs: 0, content: null });
      expect([what, r.status, r.body.source]).toEqual([what, 200, "local"]);
      expect(r.body.suggestions).toHaveLength(3);
      for (const s of r.body.suggestions as string[]) expect(s.toLowerCase()).toContain("sourdough");
      expect(standin.requests().length).toBe(before + 1);
      // Bounded by OPENAI_TIMEOUT_MS (500), not by the stand-in's 3 s.
      if (what === "timeout") expect(ms).toBeLessThan(2500);
    }
    // And OpenAI answers again once it is back.
    const back = await post(openai, "/api/ai/titles", { text: `${SOURDOUGH} ${randomUUID()}` }, u.token);
    expect(back.body.source).toBe("openai");
    const metrics = await (await fetch(`${openai.base}/metrics`)).text();
    expect(Number(/^threeam_ai_openai_fallbacks_total (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(
      cases.length,
    );
  });
});

/** Concurrent 10,000-character quality requests: ~3 s of NLP if it ran on the request loop. */
const AI_BURST = 600;
/** Fraud rules allow 10 outgoing tips an hour per sender. */
const TIPS_PER_SENDER = 10;

/** Sends AI_BURST quality requests from a worker thread, so this thread's loop stays the server's. */
function startBurst(url: string, token: string, bodies: string[]) {
  const worker = new Worker(
    `const { parentPort, workerData: w } = require("node:worker_threads");
     let done = 0;
     Promise.all(w.bodies.map((body) =>
       fetch(w.url, { method: "POST", headers: { authorization: "Bearer " + w.token, "content-type": "application/json" }, body })
         .then(async (r) => { await r.text(); if (r.status !== 200) throw new Error("status " + r.status); parentPort.postMessage({ done: ++done }); })
     )).then(() => parentPort.postMessage({ finished: true }), (e) => parentPort.postMessage({ error: String(e) }));`,
    { eval: true, workerData: { url, token, bodies } },
  );
  const state = { done: 0, finished: false, error: null as string | null };
  worker.on("message", (m: { done?: number; finished?: boolean; error?: string }) => {
    if (m.done !== undefined) state.done = m.done;
    if (m.finished) state.finished = true;
    if (m.error) state.error = m.error;
  });
  worker.on("error", (err) => {
    state.error = String(err);
  });
  // The rest of the burst is dropped once the tips are measured (the server's pool finishes or
  // drops what it queued when it closes).
  return { state, stop: () => worker.terminate() };
}

describe("the request loop", () => {
  it("keeps tips fast while a burst of AI requests runs on the worker pool", async () => {
    const creator = await api.register("creator");
    const senders: Array<{ id: string; token: string }> = [];
    for (let i = 0; i < 16; i++) {
      const v = await api.register();
      await api.fund(v.id, 100_000);
      senders.push(v);
    }
    let sent = 0;
    const tipOnce = async () => {
      const from = senders[Math.floor(sent++ / TIPS_PER_SENDER)]!;
      const started = performance.now();
      const r = await api.call("POST", "/api/payments/tip", {
        token: from.token,
        headers: { "idempotency-key": randomUUID() },
        body: { from_user_id: from.id, to_creator_username: creator.username, amount: 1 },
      });
      expect(r.status).toBe(201);
      return performance.now() - started;
    };
    const quiet: number[] = [];
    for (let i = 0; i < 10; i++) quiet.push(await tipOnce());

    const longText = (i: number) => `${GOOD[2]!.text} ${i} `.repeat(12).slice(0, 10_000);
    // A warm pool (the first request starts a thread and loads the model): the burst is NLP work.
    expect((await post(api, "/api/ai/quality", { title: "warm", text: longText(-1) })).status).toBe(200);
    const burst = startBurst(
      `${api.base}/api/ai/quality`,
      senders[0]!.token,
      Array.from({ length: AI_BURST }, (_, i) => JSON.stringify({ title: `Energy ${i}`, text: longText(i) })),
    );
    // Tips one after another from the burst's first answer (its requests reach the pool then:
    // on a machine busy with other test files that can take longer than the senders' fraud
    // budget lasts), for as long as it runs (up to that budget).
    await waitFor(
      () => burst.state.done > 0 || burst.state.finished || burst.state.error !== null,
      60_000,
      "the burst's first answer",
    );
    const busy: number[] = [];
    const doneAtTips: number[] = [];
    while (!burst.state.finished && sent < senders.length * TIPS_PER_SENDER) {
      busy.push(await tipOnce());
      doneAtTips.push(burst.state.done);
    }
    await burst.stop();
    expect(burst.state.error).toBeNull();
    const max = (xs: number[]) => Math.round(Math.max(...xs));
    console.log(
      `tip latency max: quiet ${max(quiet)} ms; ${busy.length} tips during ${AI_BURST} AI requests ${max(busy)} ms (AI requests answered when the tips ended: ${doneAtTips.at(-1)})`,
    );
    // Timing goes to benches; here only a generous bound that NLP on the request loop breaks
    // (there a tip waits for the whole burst).
    expect(max(busy)).toBeLessThan(1500);
    // The tips ran while the burst did: some AI answers had come, not all.
    expect(doneAtTips.some((d) => d > 0 && d < AI_BURST)).toBe(true);
  });
});
