// Owns a local stand-in for OpenAI's Chat Completions API (POST /v1/chat/completions): bearer
// auth, OpenAI's error shape and x-request-id, and a chat.completion answer whose message
// content is the JSON our prompts ask for ({"suggestions": [...]}), drawn from the prompt's
// text. Tests steer it into errors, slowness or unusable answers. Never imported statically by
// production code.
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** Largest request body read (a 10,000-character text in a prompt is far below it). */
export const OPENAI_STANDIN_BODY_LIMIT_BYTES = 1024 * 1024;
/** Requests remembered for tests (oldest dropped first). */
export const OPENAI_STANDIN_LOG_MAX = 10_000;

export interface OpenAiStandinBehaviour {
  /** Answer this HTTP status (with OpenAI's error body) to the next `failTimes` requests. */
  failStatus: number;
  failTimes: number;
  /** Wait this long before answering every request. */
  delayMs: number;
  /** Answer this message content instead of suggestions (e.g. not JSON). */
  content: string | null;
}

export interface OpenAiStandinRequest {
  model: string;
  prompt: string;
  authorization: string;
  answered: number;
}

export interface OpenAiStandin {
  /** Base URL for the SDK's baseURL, ending in /v1. */
  readonly url: string;
  configure(change: Partial<OpenAiStandinBehaviour>): void;
  requests(): OpenAiStandinRequest[];
  close(): Promise<void>;
}

export interface OpenAiStandinOptions {
  apiKey: string;
  port?: number;
  host?: string;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    "x-request-id": `req_${randomBytes(12).toString("hex")}`,
  });
  res.end(text);
}

function openAiError(
  res: ServerResponse,
  status: number,
  message: string,
  type: string,
  code: string | null,
) {
  sendJson(res, status, { error: { message, type, param: null, code } });
}

async function readBody(req: IncomingMessage): Promise<string | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > OPENAI_STANDIN_BODY_LIMIT_BYTES) return null;
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** What a model might say: suggestions built from the first words of the prompt's text. */
function suggestionsFor(prompt: string): string[] {
  const count = Math.min(10, Math.max(1, Number(/exactly (\d+)/.exec(prompt)?.[1] ?? "3")));
  const text = prompt.split("Text:\n")[1] ?? prompt;
  const words = text.replace(/\s+/g, " ").trim().split(" ").slice(0, 6).join(" ").slice(0, 60);
  const kinds = prompt.includes("calls to action") ? "Call to action" : "Title";
  return Array.from({ length: count }, (_, i) => `${kinds} ${i + 1} from the stand-in: ${words}`);
}

export async function startOpenAiStandin(opts: OpenAiStandinOptions): Promise<OpenAiStandin> {
  const behaviour: OpenAiStandinBehaviour = { failStatus: 500, failTimes: 0, delayMs: 0, content: null };
  const log: OpenAiStandinRequest[] = [];
  const timers = new Set<NodeJS.Timeout>();

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? "").split("?")[0];
    if (req.method !== "POST" || (path !== "/v1/chat/completions" && path !== "/chat/completions")) {
      return openAiError(
        res,
        404,
        `Unknown request URL: ${req.method} ${path}`,
        "invalid_request_error",
        "unknown_url",
      );
    }
    const authorization = req.headers.authorization ?? "";
    if (authorization !== `Bearer ${opts.apiKey}`) {
      return openAiError(res, 401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key");
    }
    const raw = await readBody(req);
    if (raw === null) return openAiError(res, 413, "Request too large.", "invalid_request_error", null);
    let body: { model?: unknown; messages?: unknown };
    try {
      body = JSON.parse(raw);
    } catch {
      return openAiError(
        res,
        400,
        "We could not parse the JSON body of your request.",
        "invalid_request_error",
        null,
      );
    }
    const messages = Array.isArray(body.messages)
      ? (body.messages as Array<{ role?: unknown; content?: unknown }>)
      : null;
    if (typeof body.model !== "string" || !messages || messages.length === 0) {
      return openAiError(
        res,
        400,
        "'model' and a non-empty 'messages' are required.",
        "invalid_request_error",
        null,
      );
    }
    const prompt = messages
      .filter((m) => m.role === "user" && typeof m.content === "string")
      .map((m) => m.content as string)
      .join("\n");
    const entry: OpenAiStandinRequest = { model: body.model, prompt, authorization, answered: 0 };
    if (log.length >= OPENAI_STANDIN_LOG_MAX) log.shift();
    log.push(entry);
    if (behaviour.delayMs > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          timers.delete(t);
          resolve();
        }, behaviour.delayMs);
        timers.add(t);
      });
    }
    if (res.destroyed) return;
    if (behaviour.failTimes > 0) {
      behaviour.failTimes--;
      entry.answered = behaviour.failStatus;
      return openAiError(
        res,
        behaviour.failStatus,
        "The server had an error while processing your request.",
        "server_error",
        null,
      );
    }
    entry.answered = 200;
    const content = behaviour.content ?? JSON.stringify({ suggestions: suggestionsFor(prompt) });
    sendJson(res, 200, {
      id: `chatcmpl-${randomBytes(12).toString("hex")}`,
      object: "chat.completion",
      created: Math.floor(Date.now() / 1000),
      model: body.model,
      choices: [
        {
          index: 0,
          message: { role: "assistant", content, refusal: null },
          logprobs: null,
          finish_reason: "stop",
        },
      ],
      usage: {
        prompt_tokens: Math.ceil(prompt.length / 4),
        completion_tokens: Math.ceil(content.length / 4),
        total_tokens: 0,
      },
      system_fingerprint: "fp_standin",
    });
  };

  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) openAiError(res, 500, "stand-in error", "server_error", null);
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, opts.host ?? "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${opts.host ?? "127.0.0.1"}:${port}/v1`,
    configure(change) {
      Object.assign(behaviour, change);
    },
    requests: () => [...log],
    async close() {
      for (const t of timers) clearTimeout(t);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
