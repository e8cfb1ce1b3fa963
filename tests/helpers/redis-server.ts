// A redis-server of the test's own, on a free port, that the test may kill and start again (the
// machine's Redis is shared and never stopped). With `durable`, an AOF fsynced on every write in
// a temporary directory, kept across restarts as a production WAL Redis would be.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { waitFor } from "./env.ts";

export class RedisServer {
  private proc: ChildProcess | null = null;
  private readonly dir = mkdtempSync(join(tmpdir(), "threeam-redis-"));

  private constructor(
    readonly port: number,
    private readonly durable: boolean,
    private readonly extraArgs: string[],
  ) {}

  /** `extraArgs`: more redis-server options (say, `--cluster-enabled yes`). */
  static async start(durable: boolean, extraArgs: string[] = []): Promise<RedisServer> {
    const s = new RedisServer(await freePort(), durable, extraArgs);
    await s.start();
    return s;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async start(): Promise<void> {
    const persistence = this.durable
      ? ["--appendonly", "yes", "--appendfsync", "always"]
      : ["--appendonly", "no"];
    this.proc = spawn(
      "redis-server",
      [
        "--port",
        String(this.port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--dir",
        this.dir,
        ...persistence,
        ...this.extraArgs,
      ],
      { stdio: "ignore" },
    );
    const probe = new Redis(this.port, "127.0.0.1", {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    probe.on("error", () => {});
    await waitFor(
      async () => {
        try {
          await probe.connect();
          return (await probe.ping()) === "PONG";
        } catch {
          probe.disconnect();
          return false;
        }
      },
      10_000,
      `redis-server on port ${this.port}`,
    );
    probe.disconnect();
  }

  /** SIGKILL, as a crash or an OOM kill would: nothing is flushed beyond what was fsynced. */
  async kill(): Promise<void> {
    const p = this.proc;
    if (!p || !this.running) return;
    const exited = new Promise((r) => p.once("exit", r));
    p.kill("SIGKILL");
    await exited;
  }

  /** SIGSTOP / SIGCONT: a Redis that holds its connections and answers nothing (a hung host). */
  pause(on: boolean): void {
    if (this.running) this.proc!.kill(on ? "SIGSTOP" : "SIGCONT");
  }

  async destroy(): Promise<void> {
    this.pause(false);
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}
