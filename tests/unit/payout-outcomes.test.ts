// What a provider's transfer status means for a payout, in the order the outcomes are published.
import { describe, expect, it } from "vitest";
import { outcomesOf } from "../../src/payouts/outcomes.ts";
import type { TransferStatus } from "../../src/payouts/provider.ts";

const status = (state: TransferStatus["state"], providerStatus = "X"): TransferStatus => ({
  providerTransferId: "t1",
  state,
  providerStatus,
});

describe("outcomesOf", () => {
  it("reports processing first, then the final state", () => {
    expect(outcomesOf(status("processing"), false)).toEqual([{ state: "processing" }]);
    expect(outcomesOf(status("paid"), false)).toEqual([{ state: "processing" }, { state: "paid" }]);
    expect(outcomesOf(status("failed", "cancelled"), false)).toEqual([
      { state: "processing" },
      { state: "failed", failureReason: "cancelled" },
    ]);
  });

  it("reads a return not yet known paid as paid then returned, and failed after paid as returned", () => {
    expect(outcomesOf(status("returned", "funds_refunded"), false)).toEqual([
      { state: "processing" },
      { state: "paid" },
      { state: "returned", failureReason: "funds_refunded" },
    ]);
    expect(outcomesOf(status("failed", "FAILED"), true)).toEqual([
      { state: "processing" },
      { state: "returned", failureReason: "FAILED" },
    ]);
  });
});
