// Owns the API's documentation endpoints: GET /openapi.json (the document openapi.ts builds from
// the endpoint table) and GET /docs, a page rendered by Scalar's standalone bundle served from
// node_modules (no CDN: the page loads only this server's own script, document and nothing else).
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { Reply } from "./respond.ts";
import { sendText } from "./respond.ts";
import type { HttpApp } from "./server.ts";

/** The standalone bundle of @scalar/api-reference (a self-contained UMD script). */
export function scalarBundlePath(): string {
  const css = createRequire(import.meta.url).resolve("@scalar/api-reference/style.css");
  return join(dirname(css), "browser", "standalone.js");
}

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>3AM API</title>
</head>
<body>
<div id="app"></div>
<script src="/docs/scalar.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
`;

// A file of its own: the page's Content-Security-Policy (script-src 'self') refuses inline scripts.
const INIT = `Scalar.createApiReference("#app", {
  url: "/openapi.json",
  withDefaultFonts: false,
  hideClientButton: true,
  telemetry: false,
  showDeveloperTools: "never",
});
`;

/** Registers /openapi.json, /docs, /docs/scalar.js and /docs/init.js; `document` is built once, at first ask. */
export function registerDocs(app: Pick<HttpApp, "get">, document: () => Record<string, unknown>): void {
  let json: string | null = null;
  let bundle: Promise<string> | null = null;
  const answer = (res: Parameters<Parameters<HttpApp["get"]>[1]>[0]) => {
    const reply: Reply = { res, aborted: false };
    res.onAborted(() => {
      reply.aborted = true;
    });
    return reply;
  };
  app.get("/openapi.json", (res) => {
    json ??= JSON.stringify(document());
    sendText(answer(res), 200, "application/json; charset=utf-8", json);
  });
  app.get("/docs", (res) => sendText(answer(res), 200, "text/html; charset=utf-8", PAGE));
  app.get("/docs/init.js", (res) => sendText(answer(res), 200, "text/javascript; charset=utf-8", INIT));
  app.get("/docs/scalar.js", (res) => {
    const reply = answer(res);
    bundle ??= readFile(scalarBundlePath(), "utf8");
    bundle.then(
      (js) => sendText(reply, 200, "text/javascript; charset=utf-8", js),
      () => sendText(reply, 500, "text/plain; charset=utf-8", "the docs bundle is missing (npm ci)"),
    );
  });
}
