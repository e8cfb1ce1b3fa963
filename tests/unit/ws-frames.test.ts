// The bench's raw WebSocket client (bench/ws-frames.ts): masked client frames decode to what was
// sent, the frame reader copes with any split of the byte stream, the cheap ack reader says what
// JSON.parse says, a report's packed acks unpack to the same acks, and the client talks to a real
// server (the `ws` package's) through handshake, text, ping and close.
import { randomBytes } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import { WebSocketServer } from "ws";
import {
  type AckFields,
  applyMask,
  encodeTextFrames,
  FrameReader,
  HandshakeRefused,
  parseAck,
  parseAckSlow,
  RawWebSocket,
  wsTarget,
} from "../../bench/ws-frames.ts";
import { AckPacker, isBatchFrame, parseTipFrame, unpackAcks } from "../../bench/ws-load.ts";

/** A server's (unmasked) frame. */
function serverFrame(opcode: number, payload: Buffer, fin = true): Buffer {
  const len = payload.length;
  const head =
    len < 126
      ? Buffer.from([(fin ? 0x80 : 0) | opcode, len])
      : len < 0x10000
        ? Buffer.from([(fin ? 0x80 : 0) | opcode, 126, len >> 8, len & 0xff])
        : (() => {
            const h = Buffer.alloc(10);
            h[0] = (fin ? 0x80 : 0) | opcode;
            h[1] = 127;
            h.writeUInt32BE(Math.floor(len / 2 ** 32), 2);
            h.writeUInt32BE(len >>> 0, 6);
            return h;
          })();
  return Buffer.concat([head, payload]);
}

/** Decodes masked client frames (as a server would). */
function decodeClientFrames(buf: Buffer): Array<{ opcode: number; text: string }> {
  const out: Array<{ opcode: number; text: string }> = [];
  let off = 0;
  while (off < buf.length) {
    const opcode = buf[off]! & 0x0f;
    expect(buf[off]! & 0x80).toBe(0x80);
    expect(buf[off + 1]! & 0x80).toBe(0x80); // masked
    let len = buf[off + 1]! & 0x7f;
    let p = off + 2;
    if (len === 126) {
      len = buf.readUInt16BE(p);
      p += 2;
    } else if (len === 127) {
      len = buf.readUInt32BE(p) * 2 ** 32 + buf.readUInt32BE(p + 4);
      p += 8;
    }
    const mask = buf.subarray(p, p + 4);
    p += 4;
    const payload = Buffer.from(buf.subarray(p, p + len));
    applyMask(payload, 0, len, mask);
    out.push({ opcode, text: payload.toString("utf8") });
    off = p + len;
  }
  return out;
}

function collect() {
  const texts: string[] = [];
  const pings: string[] = [];
  const closes: number[] = [];
  const errors: string[] = [];
  const reader = new FrameReader({
    text: (b, s, e) => texts.push(b.toString("utf8", s, e)),
    ping: (p) => pings.push(p.toString()),
    close: (code) => closes.push(code),
    protocolError: (m) => errors.push(m),
  });
  return { reader, texts, pings, closes, errors };
}

describe("bench raw WebSocket frames", () => {
  it("masks client text frames of 7-, 16- and 64-bit lengths so they decode to the texts", () => {
    const texts = [
      "",
      "a",
      "x".repeat(125),
      "é€😀".repeat(30),
      "y".repeat(126),
      "z".repeat(65535),
      "w".repeat(70_000),
    ];
    const mask = randomBytes(4);
    const buf = encodeTextFrames(texts, mask);
    const frames = decodeClientFrames(buf);
    expect(frames.map((f) => f.opcode)).toEqual(texts.map(() => 1));
    expect(frames.map((f) => f.text)).toEqual(texts);
  });

  it("reads frames however the stream is split, several to a chunk or one across many", () => {
    const texts = ["hello", "é".repeat(200), "b".repeat(70_000), "{}"];
    const stream = Buffer.concat([
      serverFrame(1, Buffer.from(texts[0]!)),
      serverFrame(9, Buffer.from("p1")),
      serverFrame(1, Buffer.from(texts[1]!)),
      serverFrame(1, Buffer.from(texts[2]!)),
      // A fragmented message: text without fin, a ping between, the continuation with fin.
      serverFrame(1, Buffer.from("{"), false),
      serverFrame(9, Buffer.from("p2")),
      serverFrame(0, Buffer.from("}")),
      serverFrame(8, Buffer.from([0x03, 0xe8])),
      serverFrame(1, Buffer.from("after close")),
    ]);
    for (const step of [3, 7, 100, 1000, stream.length]) {
      const c = collect();
      for (let i = 0; i < stream.length; i += step) c.reader.push(stream.subarray(i, i + step));
      expect(c.texts).toEqual(texts);
      expect(c.pings).toEqual(["p1", "p2"]);
      expect(c.closes).toEqual([1000]);
      expect(c.errors).toEqual([]);
    }
  });

  it("refuses masked server frames and reserved bits", () => {
    const c = collect();
    c.reader.push(Buffer.from([0x81, 0x81, 1, 2, 3, 4, 0x61]));
    expect(c.errors).toHaveLength(1);
    const d = collect();
    d.reader.push(Buffer.from([0xc1, 0x01, 0x61]));
    expect(d.errors).toHaveLength(1);
    expect(d.texts).toEqual([]);
  });

  it("reads an ack's id, status, transaction id and error code as JSON.parse does", () => {
    const tx = {
      id: "0b7c4a5e-6d1f-4f7e-9a51-3d2f6c1e8b90",
      from_user_id: "u1",
      amount: 1,
      status: "completed",
    };
    const frames = [
      JSON.stringify({
        op: "ack",
        id: "wsbench-abc-p0-17",
        status: 201,
        transaction: tx,
        balance: { balance: 3 },
      }),
      JSON.stringify({ op: "ack", id: "k1", status: 429, error: { code: "rate_limited", message: "x" } }),
      JSON.stringify({
        op: "ack",
        id: "k2",
        status: 422,
        error: { code: "fraud_limit", message: 'a "quoted" é' },
      }),
      JSON.stringify({ op: "ack", id: 'we"ird\\', status: 201, transaction: tx }),
      JSON.stringify({ op: "ack", id: "k3", status: 201, transaction: { ...tx, id: "é-unicode" } }),
      JSON.stringify({ op: "ack", id: "k4", status: 500 }),
      JSON.stringify({ op: "ack", id: "k5", status: 201.5, transaction: tx }),
      JSON.stringify({ id: "k6", op: "ack", status: 201, transaction: tx }),
      JSON.stringify({ op: "ack", id: "x".repeat(300), status: 201, transaction: tx }),
      JSON.stringify({ op: "welcome", user_id: "u" }),
      JSON.stringify({ op: "error", error: { code: "bad" } }),
      '{"op":"ack","id":"k7","status":201,"transaction":{"id":"t\\u0041"}}',
      "not json",
    ];
    for (const f of frames) {
      const b = Buffer.concat([Buffer.from("junk"), Buffer.from(f), Buffer.from("more")]);
      const got: AckFields | null = parseAck(b, 4, b.length - 4);
      expect(got, f).toEqual(parseAckSlow(f));
    }
    expect(parseAck(Buffer.from(frames[0]!), 0, Buffer.byteLength(frames[0]!))).toEqual({
      id: "wsbench-abc-p0-17",
      status: 201,
      txId: tx.id,
      errorCode: null,
    });
    expect(parseAckSlow(frames[1]!)).toEqual({
      id: "k1",
      status: 429,
      txId: null,
      errorCode: "rate_limited",
    });
  });

  it("packs a report's acks and unpacks the same acks in order", () => {
    const p = new AckPacker();
    const acks: Array<[string, string | null, number, string | null, number, number]> = [
      ["k1", "t1", 201, null, 1.234567, 1_700_000_000_001],
      ["k2", null, 429, "rate_limited", 0.5, 1_700_000_000_002],
      ["k3", null, 500, "ws_500", 12, 1_700_000_000_003],
    ];
    for (const a of acks) p.add(...a);
    const packed = JSON.parse(JSON.stringify(p.take())) as ReturnType<AckPacker["take"]>;
    const out: typeof acks = [];
    unpackAcks(packed, (...a) => out.push(a));
    expect(out).toEqual(acks);
    expect(p.size).toBe(0);
    const none: typeof acks = [];
    unpackAcks(p.take(), (...a) => none.push(a));
    expect(none).toEqual([]);
  });

  it("talks to a real WebSocket server: handshake, masked texts, ping, close both ways", async () => {
    const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
    await new Promise<void>((r) => wss.once("listening", () => r()));
    const port = (wss.address() as AddressInfo).port;
    const received: string[] = [];
    let pongs = 0;
    let urlSeen = "";
    wss.on("connection", (ws, req) => {
      urlSeen = req.url ?? "";
      ws.on("pong", () => pongs++);
      ws.on("message", (d) => {
        const t = d.toString();
        received.push(t);
        if (t === "ping me") ws.ping("hi");
        ws.send(`echo:${t}`);
        if (t === "bye from server") ws.close(4002, "go away");
      });
      ws.send("welcome");
    });
    try {
      const run = (texts: string[][], closeFirst: boolean) =>
        new Promise<{ got: string[]; errors: number }>((resolve) => {
          const got: string[] = [];
          let errors = 0;
          const want = texts.flat().length + 1;
          const ws = new RawWebSocket(wsTarget(`ws://127.0.0.1:${port}`), "/ws?access_token=abc", {
            open: () => {},
            text: (b, s, e) => {
              got.push(b.toString("utf8", s, e));
              if (got.length === 1) for (const batch of texts) ws.send(batch);
            },
            chunkRead: () => {
              if (got.length === want && closeFirst) ws.close();
            },
            error: () => {
              errors++;
            },
            closed: () => resolve({ got, errors }),
          });
        });
      const a = await run(
        [
          ["one", "two"],
          ["ping me", "z".repeat(70_000)],
        ],
        true,
      );
      expect(a.errors).toBe(0);
      expect(a.got).toEqual([
        "welcome",
        "echo:one",
        "echo:two",
        "echo:ping me",
        `echo:${"z".repeat(70_000)}`,
      ]);
      expect(received.slice(0, 4)).toEqual(["one", "two", "ping me", "z".repeat(70_000)]);
      expect(urlSeen).toBe("/ws?access_token=abc");
      await new Promise((r) => setTimeout(r, 50));
      expect(pongs).toBe(1);
      const b = await run([["bye from server"]], false);
      expect(b).toEqual({ got: ["welcome", "echo:bye from server"], errors: 0 });
    } finally {
      await new Promise<void>((r) => wss.close(() => r()));
    }
  });

  it("reports a refused upgrade as an error, then closes", async () => {
    const wss = new WebSocketServer({ port: 0, host: "127.0.0.1", verifyClient: () => false });
    await new Promise<void>((r) => wss.once("listening", () => r()));
    const port = (wss.address() as AddressInfo).port;
    try {
      const errors: string[] = [];
      await new Promise<void>((resolve) => {
        new RawWebSocket(wsTarget(`ws://127.0.0.1:${port}`), "/ws", {
          open: () => errors.push("opened"),
          text: () => {},
          chunkRead: () => {},
          error: (e) => errors.push(e.message),
          closed: () => resolve(),
        });
      });
      expect(errors).toEqual(["Unexpected server response: 401"]);
    } finally {
      await new Promise<void>((r) => wss.close(() => r()));
    }
  });

  it("hands a refused upgrade's status and Retry-After to the caller (the feed watchers retry a 503)", async () => {
    const server = createServer();
    server.on("upgrade", (_req, socket) => {
      socket.end("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 2\r\n\r\n{}");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const port = (server.address() as AddressInfo).port;
    try {
      const errors: Error[] = [];
      await new Promise<void>((resolve) => {
        new RawWebSocket(wsTarget(`ws://127.0.0.1:${port}`), "/ws", {
          open: () => errors.push(new Error("opened")),
          text: () => {},
          chunkRead: () => {},
          error: (e) => errors.push(e),
          closed: () => resolve(),
        });
      });
      expect(errors).toHaveLength(1);
      expect(errors[0]).toBeInstanceOf(HandshakeRefused);
      expect(errors[0]).toMatchObject({ status: 503, retryAfterS: 2 });
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

describe("parseTipFrame", () => {
  it("reads a feed frame's number and tip id in place, as JSON.parse would, and declines other shapes", () => {
    const id = "0190c0de-7a1b-7c2d-8e3f-a1b2c3d4e5f6";
    const frame = JSON.stringify({
      op: "tip",
      seq: 123456,
      tip: { id, kind: "tip", from: { username: "v" }, amount: "1.00", message: null },
    });
    const buf = Buffer.from(`xx${frame}yy`);
    expect(parseTipFrame(buf, 2, 2 + Buffer.byteLength(frame))).toEqual({ seq: 123456, id });
    const other = (text: string) => {
      const b = Buffer.from(text);
      return parseTipFrame(b, 0, b.length);
    };
    expect(other(JSON.stringify({ op: "subscribed", channel: "tips", seq: 4 }))).toBeNull();
    expect(other(JSON.stringify({ op: "tip", tip: { id }, seq: 1 }))).toBeNull();
    expect(other(JSON.stringify({ op: "tip", seq: 1, tip: { id: "short" } }))).toBeNull();
    expect(other('{"op":"tip","seq":,"tip":{"id":"0190c0de-7a1b-7c2d-8e3f-a1b2c3d4e5f6"}}')).toBeNull();
  });

  it("tells a batch frame by its head; the tip frames inside read in place like single ones", () => {
    const tip = (seq: number, message: string | null) =>
      JSON.stringify({
        op: "tip",
        seq,
        tip: {
          id: `0190c0de-7a1b-7c2d-8e3f-a1b2c3d4e5${String(seq).padStart(2, "0")}`,
          kind: "tip",
          message,
        },
      });
    // A message that quotes a tip frame is escaped in the JSON, so it never looks like one.
    const text = `{"op":"batch","frames":[${tip(7, '{"op":"tip","seq":9}')},${tip(8, null)}]}`;
    expect(JSON.parse(text).frames.map((f: { seq: number }) => f.seq)).toEqual([7, 8]);
    const buf = Buffer.from(text);
    expect(isBatchFrame(buf, 0, buf.length)).toBe(true);
    expect(isBatchFrame(Buffer.from(tip(1, null)), 0, tip(1, null).length)).toBe(false);
    const head = Buffer.from('{"op":"tip","seq":');
    const seqs: number[] = [];
    for (let at = buf.indexOf(head); at >= 0; at = buf.indexOf(head, at + head.length)) {
      seqs.push(parseTipFrame(buf, at, buf.length)!.seq);
    }
    expect(seqs).toEqual([7, 8]);
  });
});
