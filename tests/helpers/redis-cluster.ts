// A real Redis Cluster of the test's own: three masters (`redis-server --cluster-enabled yes` on
// free ports, each with an AOF fsynced on every write in its own temporary directory), joined by
// `redis-cli --cluster create`, as a production WAL cluster would run. kill()/start() crash and
// restart every node: the AOF brings the data back and nodes.conf the slot map.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import { waitFor } from "./env.ts";
import { freePort, RedisServer } from "./redis-server.ts";

const run = promisify(execFile);

export class RedisCluster {
  private constructor(readonly masters: RedisServer[]) {}

  static async start(size = 3): Promise<RedisCluster> {
    const masters: RedisServer[] = [];
    try {
      for (let i = 0; i < size; i++) {
        // The cluster bus port is its own free port: the default (port + 10000) may not exist.
        const bus = String(await freePort());
        masters.push(await RedisServer.start(true, ["--cluster-enabled", "yes", "--cluster-port", bus]));
      }
      const c = new RedisCluster(masters);
      await run("redis-cli", [
        "--cluster",
        "create",
        ...masters.map((m) => `127.0.0.1:${m.port}`),
        "--cluster-replicas",
        "0",
        "--cluster-yes",
      ]);
      await c.ready();
      return c;
    } catch (err) {
      for (const m of masters) await m.destroy();
      throw err;
    }
  }

  /** REDIS_CLUSTER_NODES for this cluster. */
  get nodes(): string {
    return this.masters.map((m) => `127.0.0.1:${m.port}`).join(",");
  }

  /** Until every node says cluster_state:ok (all 16384 slots served). */
  async ready(): Promise<void> {
    for (const m of this.masters) {
      const probe = new Redis(m.port, "127.0.0.1", { lazyConnect: true, maxRetriesPerRequest: 0 });
      probe.on("error", () => {});
      try {
        await waitFor(
          async () => {
            try {
              if (probe.status !== "ready") await probe.connect();
              return /cluster_state:ok/.test(String(await probe.call("CLUSTER", "INFO")));
            } catch {
              probe.disconnect();
              return false;
            }
          },
          20_000,
          `cluster node ${m.port} to report cluster_state:ok`,
        );
      } finally {
        probe.disconnect();
      }
    }
  }

  /** DBSIZE of every master. */
  async keysPerNode(): Promise<number[]> {
    const out: number[] = [];
    for (const m of this.masters) {
      const r = new Redis(m.port, "127.0.0.1", { maxRetriesPerRequest: 1 });
      try {
        out.push(await r.dbsize());
      } finally {
        r.disconnect();
      }
    }
    return out;
  }

  /** SIGKILL every node, as a power cut would: only what was fsynced comes back. */
  async kill(): Promise<void> {
    for (const m of this.masters) await m.kill();
  }

  async start(): Promise<void> {
    for (const m of this.masters) await m.start();
    await this.ready();
  }

  async destroy(): Promise<void> {
    for (const m of this.masters) await m.destroy();
  }
}
