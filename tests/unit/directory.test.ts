// The directory's view of another process's accounts (shards spread over processes): read again
// once older than its TTL, but never forgotten meanwhile, so a tip decided while the new read is
// on its way sees the old entry, not an account that does not exist (a 404 found by the bench).
import { describe, expect, it } from "vitest";
import { Directory } from "../../src/shards/directory.ts";

const user = (version: number, status: "active" | "suspended" = "active") =>
  ({ kind: "user", status, version }) as const;

describe("directory", () => {
  it("asks for a new read of another process's account after the TTL, keeping the old entry", () => {
    let now = 1_000;
    const d = new Directory(100, 5_000, () => now);
    d.learn("a", user(3), false);
    d.learn("mine", user(1), true);
    now += 5_000;
    expect(d.current("a")).toBe(true);
    now += 1;
    expect(d.current("a")).toBe(false);
    expect(d.get("a")).toMatchObject({ version: 3, status: "active" });
    // Held by a shard of this process: always current.
    expect(d.current("mine")).toBe(true);
    // The new read (even one no newer than what is known) makes it current again.
    d.learn("a", user(3), false);
    expect(d.current("a")).toBe(true);
    now += 6_000;
    d.learn("a", user(2), false);
    expect(d.current("a")).toBe(true);
    expect(d.get("a")).toMatchObject({ version: 3 });
    d.learn("a", user(4, "suspended"), false);
    expect(d.get("a")).toMatchObject({ version: 4, status: "suspended" });
    expect(d.current("nobody")).toBe(false);
  });

  it("keeps every entry current without a TTL (one process owns every shard)", () => {
    let now = 0;
    const d = new Directory(100, 0, () => now);
    d.learn("a", user(1), false);
    now += 10 ** 9;
    expect(d.current("a")).toBe(true);
  });
});
