// Owns the load generator's raw WebSocket client (RFC 6455) over node:net: the upgrade handshake,
// masked client frames built straight into one Buffer per batch, and a reader of the server's
// frames that copes with frames split across TCP chunks and several frames in one chunk. The
// tipping lanes use it instead of the `ws` package, which cost more CPU per tip than the server
// under test (see bench/ws-load.ts's header for the numbers); it does only what the lanes need:
// no extensions (no permessage-deflate is offered), text frames out, text/ping/close in.
import { hash, randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const OP_CONT = 0x0;
const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;
/** Frames larger than this are a protocol error here (acks are a few hundred bytes). */
const MAX_FRAME_BYTES = 16 * 1024 * 1024;

/** The header of a masked client frame of `len` payload bytes: its size, written at `off`. */
function writeHeader(buf: Buffer, off: number, opcode: number, len: number, mask: Buffer): number {
  buf[off] = 0x80 | opcode;
  let o = off + 2;
  if (len < 126) buf[off + 1] = 0x80 | len;
  else if (len < 0x10000) {
    buf[off + 1] = 0x80 | 126;
    buf.writeUInt16BE(len, o);
    o += 2;
  } else {
    buf[off + 1] = 0x80 | 127;
    buf.writeUInt32BE(Math.floor(len / 0x100000000), o);
    buf.writeUInt32BE(len >>> 0, o + 4);
    o += 8;
  }
  buf[o] = mask[0]!;
  buf[o + 1] = mask[1]!;
  buf[o + 2] = mask[2]!;
  buf[o + 3] = mask[3]!;
  return o + 4 - off;
}

function headerBytes(len: number): number {
  return len < 126 ? 6 : len < 0x10000 ? 8 : 14;
}

/** XORs `len` bytes of `buf` from `off` with the 4-byte `mask` (masking and unmasking alike). */
export function applyMask(buf: Buffer, off: number, len: number, mask: Buffer): void {
  const m0 = mask[0]!;
  const m1 = mask[1]!;
  const m2 = mask[2]!;
  const m3 = mask[3]!;
  const end = off + len;
  let i = off;
  for (; i + 3 < end; i += 4) {
    buf[i] = buf[i]! ^ m0;
    buf[i + 1] = buf[i + 1]! ^ m1;
    buf[i + 2] = buf[i + 2]! ^ m2;
    buf[i + 3] = buf[i + 3]! ^ m3;
  }
  for (let k = 0; i < end; i++, k++) buf[i] = buf[i]! ^ mask[k]!;
}

/** Masked text frames of `texts`, one after another in one Buffer (one socket write). */
export function encodeTextFrames(texts: readonly string[], mask: Buffer): Buffer {
  let total = 0;
  const lens = new Array<number>(texts.length);
  for (let i = 0; i < texts.length; i++) {
    const len = Buffer.byteLength(texts[i]!, "utf8");
    lens[i] = len;
    total += headerBytes(len) + len;
  }
  const buf = Buffer.allocUnsafe(total);
  let off = 0;
  for (let i = 0; i < texts.length; i++) {
    const len = lens[i]!;
    off += writeHeader(buf, off, OP_TEXT, len, mask);
    buf.write(texts[i]!, off, len, "utf8");
    applyMask(buf, off, len, mask);
    off += len;
  }
  return buf;
}

/** One masked control (or other) frame with `payload`. */
export function encodeFrame(opcode: number, payload: Buffer, mask: Buffer): Buffer {
  const len = payload.length;
  const buf = Buffer.allocUnsafe(headerBytes(len) + len);
  const off = writeHeader(buf, 0, opcode, len, mask);
  payload.copy(buf, off);
  applyMask(buf, off, len, mask);
  return buf;
}

export interface FrameHandlers {
  /** A complete text message: `buf[start, end)` (valid until the handler returns). */
  text(buf: Buffer, start: number, end: number): void;
  ping(payload: Buffer): void;
  /** The server's close frame: its code (1005 when none) and reason. */
  close(code: number, reason: string): void;
  /** A frame this client does not accept (the caller drops the socket). */
  protocolError(message: string): void;
}

/** Reads server frames from a stream of chunks. */
export class FrameReader {
  /** The bytes of an incomplete frame (its chunks, joined once enough arrived: a batch frame of
   * hundreds of KB comes in many reads, and joining at every read copied it over and over). */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Bytes the incomplete frame needs before it can be read on (its header's, then its whole). */
  private needBytes = 0;
  /** Fragments of a text message sent in several frames (rare: servers send acks whole). */
  private fragments: Buffer[] | null = null;
  private failed = false;

  constructor(private readonly h: FrameHandlers) {}

  push(chunk: Buffer): void {
    if (this.failed) return;
    let buf = chunk;
    if (this.pending.length > 0) {
      this.pending.push(Buffer.from(chunk)); // the chunk's memory is reused by the next read
      this.pendingBytes += chunk.length;
      if (this.pendingBytes < this.needBytes) return;
      buf = Buffer.concat(this.pending, this.pendingBytes);
      this.pending = [];
      this.pendingBytes = 0;
    }
    const n = buf.length;
    let off = 0;
    while (off + 2 <= n) {
      const b0 = buf[off]!;
      const b1 = buf[off + 1]!;
      const fin = (b0 & 0x80) !== 0;
      const opcode = b0 & 0x0f;
      const masked = (b1 & 0x80) !== 0;
      let len = b1 & 0x7f;
      let p = off + 2;
      if ((b0 & 0x70) !== 0) {
        this.fail("reserved bits set (no extension was negotiated)");
        return;
      }
      // What the frame needs to be read on, should this chunk end inside it.
      this.needBytes = 14;
      if (len === 126) {
        if (p + 2 > n) break;
        len = buf.readUInt16BE(p);
        p += 2;
      } else if (len === 127) {
        if (p + 8 > n) break;
        const hi = buf.readUInt32BE(p);
        if (hi > 0x1fffff) {
          this.fail("frame length over 2^53");
          return;
        }
        len = hi * 0x100000000 + buf.readUInt32BE(p + 4);
        p += 8;
      }
      if (len > MAX_FRAME_BYTES) {
        this.fail(`frame of ${len} bytes`);
        return;
      }
      if (masked) {
        this.fail("masked server frame");
        return;
      }
      if (p + len > n) {
        this.needBytes = p - off + len;
        break;
      }
      const end = p + len;
      off = end;
      if (opcode === OP_TEXT || opcode === OP_BINARY) {
        if (this.fragments) {
          this.fail("new message inside a fragmented one");
          return;
        }
        if (fin) this.h.text(buf, p, end);
        else this.fragments = [Buffer.from(buf.subarray(p, end))];
      } else if (opcode === OP_CONT) {
        if (!this.fragments) {
          this.fail("continuation without a message");
          return;
        }
        this.fragments.push(Buffer.from(buf.subarray(p, end)));
        if (fin) {
          const whole = Buffer.concat(this.fragments);
          this.fragments = null;
          this.h.text(whole, 0, whole.length);
        }
      } else if (opcode === OP_PING) {
        this.h.ping(Buffer.from(buf.subarray(p, end)));
      } else if (opcode === OP_PONG) {
        // Unsolicited pongs are allowed; nothing to do.
      } else if (opcode === OP_CLOSE) {
        const code = len >= 2 ? buf.readUInt16BE(p) : 1005;
        const reason = len > 2 ? buf.toString("utf8", p + 2, end) : "";
        this.h.close(code, reason);
        this.failed = true; // Nothing after a close frame is read.
        return;
      } else {
        this.fail(`unknown opcode ${opcode}`);
        return;
      }
      if (this.failed) return;
    }
    if (off < n) {
      if (n - off < 2) this.needBytes = 2;
      this.pending = [Buffer.from(buf.subarray(off))];
      this.pendingBytes = n - off;
    }
  }

  private fail(message: string): void {
    this.failed = true;
    this.pending = [];
    this.h.protocolError(message);
  }
}

/** An ack of a tip, as the lanes report it. */
export interface AckFields {
  id: string;
  status: number;
  /** The transaction's id when status is 201. */
  txId: string | null;
  /** The error's code, when the ack has one. */
  errorCode: string | null;
}

const ACK_PREFIX = '{"op":"ack","id":"';
const STATUS = ',"status":';
const TX = ',"transaction":{"id":"';
const ERR = ',"error":{"code":"';
/** Printable ASCII without a backslash: read from latin1 the same as JSON.parse reads it. */
const PLAIN = /^[\x20-\x5b\x5d-\x7e]*$/;
const plain = (t: string) => PLAIN.test(t);
/** Enough of an ack to hold its id, status and transaction id or error code (ids are short). */
const HEAD_BYTES = 200;

/**
 * Reads an ack's id, status, transaction id (201) and error code. The server writes acks as
 * JSON.stringify({op, id, status, ...body}), so these fields come first in this order: they are
 * read from the frame's head by position; anything else (another frame, another layout, an escape
 * in a string) goes through JSON.parse, so the result is always what JSON.parse would give.
 * Returns null for frames that are not acks (welcome, errors without id).
 */
export function parseAck(buf: Buffer, start: number, end: number): AckFields | null {
  const s = buf.toString("latin1", start, Math.min(end, start + HEAD_BYTES));
  if (s.startsWith(ACK_PREFIX)) {
    const idEnd = s.indexOf('"', ACK_PREFIX.length);
    if (idEnd > 0 && s.startsWith(STATUS, idEnd + 1)) {
      const id = s.slice(ACK_PREFIX.length, idEnd);
      let p = idEnd + 1 + STATUS.length;
      let status = 0;
      const d0 = p;
      for (let c = s.charCodeAt(p); c >= 48 && c <= 57; c = s.charCodeAt(++p))
        status = status * 10 + (c - 48);
      const simple = id.length > 0 && plain(id) && p > d0 && p - d0 <= 3;
      if (simple && status === 201 && s.startsWith(TX, p)) {
        const q = p + TX.length;
        const txEnd = s.indexOf('"', q);
        const txId = txEnd > 0 ? s.slice(q, txEnd) : "";
        if (txEnd > 0 && plain(txId)) return { id, status, txId, errorCode: null };
      } else if (simple && status !== 201 && s.startsWith(ERR, p)) {
        const q = p + ERR.length;
        const codeEnd = s.indexOf('"', q);
        const code = codeEnd > 0 ? s.slice(q, codeEnd) : "";
        if (codeEnd > 0 && plain(code)) return { id, status, txId: null, errorCode: code };
      }
    }
  }
  return parseAckSlow(buf.toString("utf8", start, end));
}

/** The general case: what JSON.parse says. Also the reference parseAck is tested against. */
export function parseAckSlow(text: string): AckFields | null {
  let f: {
    op?: unknown;
    id?: unknown;
    status?: unknown;
    transaction?: { id?: unknown };
    error?: { code?: unknown };
  };
  try {
    f = JSON.parse(text) as typeof f;
  } catch {
    return null;
  }
  if (f === null || typeof f !== "object" || f.op !== "ack" || typeof f.id !== "string" || f.id === "")
    return null;
  const status = typeof f.status === "number" ? f.status : 0;
  const txId = status === 201 ? String(f.transaction?.id) : null;
  const code = f.error?.code;
  return { id: f.id, status, txId, errorCode: typeof code === "string" ? code : null };
}

/** Random bytes for masks and handshake keys, drawn from the OS 4 KiB at a time (a
 * randomBytes call per socket cost more than the socket's frames). */
let pool = Buffer.alloc(0);
let poolAt = 0;
function random(n: number): Buffer {
  if (poolAt + n > pool.length) {
    pool = randomBytes(4096);
    poolAt = 0;
  }
  poolAt += n;
  return pool.subarray(poolAt - n, poolAt);
}

/** Every RawWebSocket reads into this one buffer (net's `onread`): a chunk is parsed before the
 * next read, and whatever outlives the callback is copied out, so no per-chunk Buffer nor the
 * Readable stream's 'data' machinery. */
const READ_BUFFER = Buffer.allocUnsafe(256 * 1024);

/** Where sockets to one server connect (parsed once, not per socket). */
export interface WsTarget {
  host: string;
  port: number;
  /** The Host header. */
  hostHeader: string;
}

export function wsTarget(base: string): WsTarget {
  const u = new URL(base);
  return { host: u.hostname.replace(/^\[|\]$/g, ""), port: Number(u.port) || 80, hostHeader: u.host };
}

export interface RawSocketHandlers {
  /** The upgrade succeeded (the socket may already carry frames right after it). */
  open(): void;
  text(buf: Buffer, start: number, end: number): void;
  /** After the frames of one TCP chunk were handed to `text`: a place to batch what they cause. */
  chunkRead(): void;
  /** A failed handshake, a protocol error or a socket error. */
  error(err: Error): void;
  /** Always last, once. */
  closed(): void;
}

/** An upgrade answered with something other than 101: its status and Retry-After (seconds). */
export class HandshakeRefused extends Error {
  constructor(
    readonly status: number,
    readonly retryAfterS: number | null,
  ) {
    super(`Unexpected server response: ${status}`);
  }
}

/** A client WebSocket over node:net: `send` masked text frames, `close` with 1000. */
export class RawWebSocket {
  private readonly socket: Socket;
  private readonly mask: Buffer = random(4);
  private readonly key: string = random(16).toString("base64");
  private upgraded = false;
  private head: Buffer | null = null;
  private closeSent = false;
  private failed = false;
  private done = false;
  private readonly reader: FrameReader;

  /** Opens `path` (with its query) on `target`. */
  constructor(
    target: WsTarget,
    path: string,
    private readonly h: RawSocketHandlers,
  ) {
    this.reader = new FrameReader({
      text: h.text,
      ping: (payload) => this.write(encodeFrame(OP_PONG, payload, this.mask)),
      close: (code) => {
        // Echo the close (RFC 6455 5.5.1) unless we started it, then end our side.
        if (!this.closeSent) {
          this.closeSent = true;
          const body = Buffer.allocUnsafe(code === 1005 ? 0 : 2);
          if (code !== 1005) body.writeUInt16BE(code);
          this.write(encodeFrame(OP_CLOSE, body, this.mask));
        }
        this.socket.end();
      },
      protocolError: (message) => this.fail(new Error(`websocket protocol error: ${message}`)),
    });
    this.socket = connect({
      port: target.port,
      host: target.host,
      noDelay: true,
      onread: {
        buffer: READ_BUFFER,
        callback: (n: number, buf: Uint8Array) => {
          this.read(Buffer.from(buf.buffer, buf.byteOffset, n));
          return true;
        },
      },
    });
    // Written once connected (net holds it until then).
    this.socket.write(
      `GET ${path} HTTP/1.1\r\nHost: ${target.hostHeader}\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: ${this.key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );

    this.socket.on("error", (err) => this.fail(err));
    this.socket.on("close", () => {
      if (this.done) return;
      this.done = true;
      h.closed();
    });
  }

  /** Sends `texts` as masked text frames in one write. */
  send(texts: readonly string[]): void {
    if (this.closeSent || texts.length === 0) return;
    this.write(encodeTextFrames(texts, this.mask));
  }

  /** Starts the closing handshake (1000); `closed` follows once the server has answered. */
  close(): void {
    if (this.closeSent) return;
    this.closeSent = true;
    const body = Buffer.from([0x03, 0xe8]);
    this.write(encodeFrame(OP_CLOSE, body, this.mask));
  }

  /** One chunk read (in the shared READ_BUFFER: valid until this returns). */
  private read(chunk: Buffer): void {
    if (this.done) return;
    if (this.upgraded) this.reader.push(chunk);
    else this.handshake(chunk);
    if (this.upgraded && !this.done) this.h.chunkRead();
  }

  private write(b: Buffer): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(b);
  }

  private handshake(chunk: Buffer): void {
    const buf = this.head ? Buffer.concat([this.head, chunk]) : chunk;
    const at = buf.indexOf("\r\n\r\n");
    if (at < 0) {
      if (buf.length > 16 * 1024) {
        this.fail(new Error("websocket handshake: response head too long"));
        return;
      }
      this.head = Buffer.from(buf);
      return;
    }
    this.head = null;
    const lines = buf.toString("latin1", 0, at).split("\r\n");
    const status = /^HTTP\/1\.1 (\d{3})/.exec(lines[0] ?? "");
    const header = (name: string): string | null => {
      for (const line of lines) {
        const colon = line.indexOf(":");
        if (colon > 0 && line.slice(0, colon).trim().toLowerCase() === name)
          return line.slice(colon + 1).trim();
      }
      return null;
    };
    if (!status) {
      this.fail(new Error(`Unexpected server response: ${lines[0]}`));
      return;
    }
    if (status[1] !== "101") {
      const retry = Number(header("retry-after"));
      this.fail(new HandshakeRefused(Number(status[1]), Number.isFinite(retry) && retry > 0 ? retry : null));
      return;
    }
    const accept = header("sec-websocket-accept");
    const expected = hash("sha1", this.key + GUID, "base64");
    if (accept !== expected) {
      this.fail(new Error("websocket handshake: invalid Sec-WebSocket-Accept"));
      return;
    }
    this.upgraded = true;
    this.h.open();
    if (at + 4 < buf.length && !this.done) this.reader.push(buf.subarray(at + 4));
  }

  private fail(err: Error): void {
    if (this.done || this.failed) return;
    this.failed = true;
    this.h.error(err);
    this.socket.destroy();
  }
}
