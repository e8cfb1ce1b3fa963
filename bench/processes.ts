// Owns the servers under test as child processes: started with their own environment and log
// file, optionally CPU-profiled, waited for until they answer, and stopped the way production
// stops them (SIGTERM, so the real server drains its WAL), killed only if that takes too long.
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, mkdirSync, openSync } from "node:fs";
import { connect, createServer } from "node:net";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = fileURLToPath(new URL("../", import.meta.url));

export interface ChildServer {
  name: string;
  base: string;
  port: number;
  logFile: string;
  proc: ChildProcess;
  /** Resolves with the exit code once the process is gone. */
  exited: Promise<number | null>;
  stop(timeoutMs?: number): Promise<number | null>;
}

/** A free TCP port on 127.0.0.1 (asked of the kernel, then released for the child to take). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface StartOptions {
  name: string;
  /** Script relative to the repository root, run with tsx. */
  script: string;
  env: Record<string, string>;
  logDir: string;
  profileDir: string | null;
  /** Path answering 200 once the server is ready to be measured. */
  readyPath: string;
  readyTimeoutMs?: number;
}

export async function startServer(o: StartOptions): Promise<ChildServer> {
  const port = await freePort();
  mkdirSync(o.logDir, { recursive: true });
  const logFile = `${o.logDir}${o.name}.log`;
  const fd = openSync(logFile, "w");
  const nodeArgs = ["--import", "tsx", ...(process.env.BENCH_NODE_FLAGS ?? "").split(" ").filter(Boolean)];
  if (o.profileDir) {
    // One directory per server: every thread (tsx runs its loader in one) writes its own profile.
    const dir = `${o.profileDir.replace(/\/$/, "")}/${o.name}`;
    mkdirSync(dir, { recursive: true });
    nodeArgs.unshift("--cpu-prof", "--cpu-prof-dir", dir);
  }
  const proc = spawn(process.execPath, [...nodeArgs, o.script], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...o.env, PORT: String(port) },
    stdio: ["ignore", fd, fd],
  });
  closeSync(fd);
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  const base = `http://127.0.0.1:${port}`;
  const child: ChildServer = {
    name: o.name,
    base,
    port,
    logFile,
    proc,
    exited,
    async stop(timeoutMs = 60_000) {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
  const deadline = Date.now() + (o.readyTimeoutMs ?? 60_000);
  let gone = false;
  void exited.then(() => {
    gone = true;
  });
  for (;;) {
    if (gone) throw new Error(`${o.name} exited before it was ready; see ${logFile}`);
    try {
      const r = await fetch(base + o.readyPath);
      await r.arrayBuffer();
      if (r.ok) return child;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await child.stop(5000);
      throw new Error(`${o.name} was not ready within ${o.readyTimeoutMs ?? 60_000} ms; see ${logFile}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface BenchRedis {
  url: string;
  dir: string;
  stop(): Promise<void>;
  /** Synchronous SIGKILL, for a bench process that is exiting anyway. */
  kill(): void;
}

/**
 * A redis-server of the bench's own on a free port. `aof`: the WAL's production durability
 * (`appendonly yes`, `appendfsync always`: Redis answers a write only once it is fsynced in its
 * AOF, kept in `dir`); otherwise no persistence at all, as the rate limiters' counters need none.
 */
export async function startBenchRedisServer(dir: string, logFile: string, aof: boolean): Promise<BenchRedis> {
  const port = await freePort();
  const args = [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--dir",
    dir,
    "--logfile",
    logFile,
  ];
  if (aof) args.push("--appendonly", "yes", "--appendfsync", "always");
  else args.push("--appendonly", "no");
  const proc = spawn("redis-server", args, { stdio: "ignore" });
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  const spawnError = new Promise<never>((_, reject) =>
    proc.once("error", (err) =>
      reject(
        new Error(
          `cannot start redis-server for the bench's own Redis (${err.message}); install it, or run with --redis shared`,
        ),
      ),
    ),
  );
  // Raced below while starting; an error after that (a failed kill) must not crash the bench.
  spawnError.catch(() => {});
  const url = `redis://127.0.0.1:${port}`;
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill("SIGTERM");
    const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ready = await Promise.race([spawnError, pingOnce(port)]);
    if (ready) return { url, dir, stop, kill: () => proc.kill("SIGKILL") };
    if (proc.exitCode !== null) {
      throw new Error(`the bench's redis-server exited (code ${proc.exitCode}); see ${logFile}`);
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`the bench's redis-server did not answer within 10 s; see ${logFile}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** True once something on the port answers PING with PONG. */
function pingOnce(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect(port, "127.0.0.1");
    let reply = "";
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.once("error", () => done(false));
    sock.once("connect", () => sock.write("PING\r\n"));
    sock.on("data", (d) => {
      reply += d.toString();
      if (reply.includes("\r\n")) done(reply.startsWith("+PONG"));
    });
  });
}
