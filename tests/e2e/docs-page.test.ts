// GET /docs in Debian's Chromium (playwright-core; skipped when /usr/bin/chromium is missing):
// Scalar's standalone bundle, served by this server (no CDN: any request elsewhere fails the
// test), renders /openapi.json and shows the tip endpoint. A screenshot goes to tests/artifacts/.
import { existsSync, mkdirSync } from "node:fs";
import { type Browser, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Api, startApi } from "../helpers/api.ts";
import { createTestEnv, type TestEnv } from "../helpers/env.ts";

const CHROMIUM = "/usr/bin/chromium";
const ARTIFACTS = new URL("../artifacts/", import.meta.url);

describe.runIf(existsSync(CHROMIUM))("docs page in Chromium", () => {
  let env: TestEnv;
  let api: Api;
  let browser: Browser | undefined;
  beforeAll(async () => {
    env = await createTestEnv("docs");
    api = await startApi(env);
    mkdirSync(ARTIFACTS, { recursive: true });
  });
  afterAll(async () => {
    await browser?.close();
    await api?.close();
    await env?.cleanup();
  });

  it("renders the API reference from /openapi.json with the tip endpoint, loading nothing from elsewhere", async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
      ],
    });
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const foreign: string[] = [];
    const errors: string[] = [];
    await page.route("**/*", (route) => {
      const url = route.request().url();
      if (url.startsWith(api.base) || url.startsWith("data:") || url.startsWith("blob:"))
        return route.continue();
      foreign.push(url);
      return route.abort();
    });
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(m.text());
    });
    const loaded: string[] = [];
    page.on("response", (r) => loaded.push(`${r.status()} ${new URL(r.url()).pathname}`));
    const r = await page.goto(`${api.base}/docs`);
    expect(r?.status()).toBe(200);
    // The operation's summary and path, as Scalar renders them, once its tag is opened.
    await page.getByText("payments", { exact: true }).first().click({ timeout: 30_000 });
    await page
      .getByText("Tip a creator")
      .first()
      .waitFor({ timeout: 30_000 })
      .catch(async (e) => {
        await page.screenshot({ path: new URL("docs-failed.png", ARTIFACTS).pathname });
        throw new Error(
          `${e.message}\nloaded: ${loaded.join(", ")}\nforeign: ${foreign.join(", ")}\nerrors: ${errors.join("\n")}`,
        );
      });
    await page.getByText("/api/payments/tip").first().waitFor({ timeout: 10_000 });
    expect(loaded).toEqual(expect.arrayContaining(["200 /docs/scalar.js", "200 /openapi.json"]));
    await page.screenshot({ path: new URL("docs.png", ARTIFACTS).pathname });
    expect(foreign).toEqual([]);
    expect(errors.filter((e) => /Content Security Policy|Refused/.test(e))).toEqual([]);
  }, 60_000);
});
