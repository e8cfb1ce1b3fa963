// The WAL persister's side of its worker thread: its own Redis connection and Postgres pool, the
// same Persister as in-process, and messages to the ledger's thread for trim floors (which only
// the ledger knows), health reports and drain/stop requests.
import { readlinkSync } from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import pino from "pino";
import { createPool } from "../db/pool.ts";
import { openRedis } from "../redis/connect.ts";
import { Persister } from "./persister.ts";
import type { FromWorker, PersisterWorkerData, ToWorker } from "./persister-thread.ts";

const data = workerData as PersisterWorkerData;
const port = parentPort!;
const send = (m: FromWorker) => port.postMessage(m);
const logger = pino({ level: data.logLevel }).child({ component: "persister" });

const redis = openRedis(data.redis, { maxRetriesPerRequest: 1, enableAutoPipelining: false });
redis.on("error", (err) => logger.warn({ err: err.message }, "persister redis connection error"));
const pool = createPool(data.databaseUrl, data.lanes + 2);
pool.on("error", (err) => logger.error({ err }, "idle Postgres client error"));

let nextAsk = 0;
const floorsAsked = new Map<number, (floor: string | null) => void>();

const persister = new Persister({
  ...data.options,
  redis,
  pool,
  logger,
  trimFloor: (shard) =>
    new Promise<string | null>((resolve) => {
      const id = nextAsk++;
      floorsAsked.set(id, resolve);
      send({ t: "floor?", id, shard });
    }),
});

const report = () => send({ t: "health", health: persister.health(), stats: { ...persister.stats } });
let reporter: NodeJS.Timeout | null = null;

port.on("message", (m: ToWorker) => {
  switch (m.t) {
    case "floor": {
      floorsAsked.get(m.id)?.(m.floor);
      floorsAsked.delete(m.id);
      return;
    }
    case "start":
      persister.start();
      reporter = setInterval(report, data.reportMs);
      return;
    case "drain":
      persister.drain().then(
        () => {
          report();
          send({ t: "done", id: m.id });
        },
        (err: Error) => send({ t: "done", id: m.id, error: err.message }),
      );
      return;
    case "stop":
      if (reporter) clearInterval(reporter);
      persister
        .stop()
        .then(async () => {
          report();
          redis.disconnect();
          await pool.end();
        })
        .then(
          () => send({ t: "done", id: m.id }),
          (err: Error) => send({ t: "done", id: m.id, error: err.message }),
        );
      return;
  }
});

persister.init().then(
  () => {
    report();
    send({ t: "ready", tid: osThreadId() });
  },
  (err: Error) => send({ t: "failed", error: err.message }),
);

/** This thread's id in the kernel (Linux; null elsewhere): its CPU is then readable in /proc. */
function osThreadId(): number | null {
  try {
    return Number(readlinkSync("/proc/thread-self").split("/").pop()) || null;
  } catch {
    return null;
  }
}
