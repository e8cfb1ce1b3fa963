// Ledger ids: RFC 9562 version 7, unique, and ordered by the millisecond they were minted in.
import { describe, expect, it } from "vitest";
import { validate, version } from "uuid";
import { newLedgerId } from "../../src/ledger/ids.ts";

describe("ledger ids", () => {
  it("are valid UUIDv7 and unique across many pool refills", () => {
    const ids = Array.from({ length: 20_000 }, () => newLedgerId());
    for (const id of ids.slice(0, 500)) {
      expect(validate(id)).toBe(true);
      expect(version(id)).toBe(7);
    }
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("carry the minting time, so later ids sort after earlier ones", async () => {
    const before = Date.now();
    const a = newLedgerId();
    await new Promise((r) => setTimeout(r, 5));
    const b = newLedgerId();
    const msOf = (id: string) => Number.parseInt(id.replace(/-/g, "").slice(0, 12), 16);
    expect(msOf(a)).toBeGreaterThanOrEqual(before);
    expect(msOf(b)).toBeGreaterThan(msOf(a));
    expect(b > a).toBe(true);
  });
});
