// Owns the ids the ledger mints. Transactions get UUIDv7 ids: time-ordered, so Postgres index
// inserts append to the right edge instead of landing on random pages. uuid's own random source
// calls crypto.getRandomValues for every id (~1.6 us, measured 3% of the server's tip path); the
// random bytes come from a pooled buffer instead (~0.1 us an id).
import { randomFillSync } from "node:crypto";
import { v7 } from "uuid";

const pool = new Uint8Array(16 * 256);
let at = pool.length;

export function newLedgerId(): string {
  if (at + 16 > pool.length) {
    randomFillSync(pool);
    at = 0;
  }
  const random = pool.subarray(at, at + 16);
  at += 16;
  return v7({ random });
}
