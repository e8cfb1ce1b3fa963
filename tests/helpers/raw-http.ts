// A raw HTTP/1.1 client on a plain TCP socket, for requests no well-behaved client would send
// (fetch and node:http refuse to write malformed paths, headers and framing). One request per
// connection; the answer is read by Content-Length.
import net from "node:net";

export interface RawAnswer {
  status: number;
  headers: Map<string, string[]>;
  body: Buffer;
}

/** Thrown when the server did not answer within the deadline (or closed without answering). */
export class NoAnswer extends Error {}

/** Sends `request` as is and resolves with the parsed answer, or rejects with NoAnswer. */
export function rawRequest(port: number, request: Buffer | string, timeoutMs = 5000): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    let buf = Buffer.alloc(0);
    let settled = false;
    const finish = (err: Error | null, answer?: RawAnswer) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(answer!);
    };
    const timer = setTimeout(
      () => finish(new NoAnswer(`no answer within ${timeoutMs} ms (got ${buf.length} bytes)`)),
      timeoutMs,
    );
    socket.on("error", (e) => finish(new NoAnswer(`socket error ${e.message}`)));
    socket.on("close", () => finish(new NoAnswer(`closed after ${buf.length} bytes without a whole answer`)));
    socket.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      try {
        const answer = parseAnswer(buf);
        if (answer) finish(null, answer);
      } catch (e) {
        finish(e as Error);
      }
    });
    socket.write(typeof request === "string" ? Buffer.from(request, "latin1") : request);
  });
}

/** A whole answer at the start of `buf`, or null while more bytes are needed. */
export function parseAnswer(buf: Buffer): RawAnswer | null {
  const end = buf.indexOf("\r\n\r\n");
  if (end < 0) return null;
  const lines = buf.subarray(0, end).toString("latin1").split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "");
  if (!m) throw new Error(`not an HTTP answer: ${JSON.stringify(lines[0])}`);
  const headers = new Map<string, string[]>();
  for (const line of lines.slice(1)) {
    const i = line.indexOf(":");
    const k = line.slice(0, i).trim().toLowerCase();
    headers.set(k, [...(headers.get(k) ?? []), line.slice(i + 1).trim()]);
  }
  const length = Number(headers.get("content-length")?.[0] ?? "0");
  if (buf.length < end + 4 + length) return null;
  return {
    status: Number(m[1]),
    headers,
    body: buf.subarray(end + 4, end + 4 + length),
  };
}

/**
 * Builds a request: the request line, the headers as given (in order), and the body framed by
 * Content-Length, or with `chunk` set, chunked (Transfer-Encoding) in pieces of at most that size.
 */
export function buildRequest(
  method: string,
  target: string,
  headers: Array<[string, string]>,
  body: Buffer | null,
  chunk?: number,
): Buffer {
  const head = [`${method} ${target} HTTP/1.1`, "Host: 127.0.0.1"];
  for (const [k, v] of headers) head.push(`${k}: ${v}`);
  const parts: Buffer[] = [];
  if (body !== null && chunk !== undefined) {
    head.push("Transfer-Encoding: chunked");
    for (let i = 0; i < body.length; i += chunk) {
      const piece = body.subarray(i, i + chunk);
      parts.push(Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from("\r\n"));
    }
    parts.push(Buffer.from("0\r\n\r\n"));
  } else if (body !== null) {
    head.push(`Content-Length: ${body.length}`);
    parts.push(body);
  }
  return Buffer.concat([Buffer.from(`${head.join("\r\n")}\r\n\r\n`, "utf8"), ...parts]);
}

export interface Exchange {
  /** Everything the server wrote before it closed the connection or the wait ended. */
  received: Buffer;
  /** When the server closed the connection (ms after the request was written), or null. */
  closedAfterMs: number | null;
}

/** Sends `request` and waits up to `waitMs` for the server to close the connection. */
export function rawExchange(port: number, request: Buffer | string, waitMs: number): Promise<Exchange> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    let started = 0;
    let done = false;
    const finish = (closedAfterMs: number | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ received: Buffer.concat(chunks), closedAfterMs });
    };
    const timer = setTimeout(() => finish(null), waitMs);
    socket.on("data", (c) => chunks.push(c));
    socket.on("end", () => finish(Date.now() - started));
    socket.on("close", () => finish(Date.now() - started));
    socket.on("error", () => finish(Date.now() - started));
    socket.on("connect", () => {
      started = Date.now();
      socket.write(typeof request === "string" ? Buffer.from(request, "latin1") : request);
    });
  });
}
