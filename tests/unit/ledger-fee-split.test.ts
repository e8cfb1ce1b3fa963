import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { splitTip } from "../../src/ledger/fee-split.ts";
import { centsToDollars, dollarsToCents } from "../../src/ledger/money.ts";

describe("tip fee split", () => {
  it("splits a $1 tip into 97 to the creator, 2 kept by the platform, 1 to charity", () => {
    expect(splitTip(100)).toEqual({
      amountCents: 100,
      platformFeeCents: 3,
      charityFeeCents: 1,
      platformKeepsCents: 2,
      netAmountCents: 97,
    });
    expect(splitTip(300)).toMatchObject({ platformFeeCents: 9, charityFeeCents: 3, netAmountCents: 291 });
  });

  it("rounds percentages half up: 50 cents -> 1.5 -> 2 platform, 0.5 -> 1 charity", () => {
    expect(splitTip(50)).toMatchObject({ platformFeeCents: 2, charityFeeCents: 1, netAmountCents: 48 });
    expect(splitTip(16)).toMatchObject({ platformFeeCents: 0, charityFeeCents: 0, netAmountCents: 16 });
    expect(splitTip(17)).toMatchObject({ platformFeeCents: 1, charityFeeCents: 0, netAmountCents: 16 });
  });

  it("balances exactly with no negative leg for every amount from 1 cent to $10,000", () => {
    for (let a = 1; a <= 1_000_000; a++) {
      const s = splitTip(a);
      if (
        s.netAmountCents + s.platformKeepsCents + s.charityFeeCents !== a ||
        s.netAmountCents < 0 ||
        s.platformKeepsCents < 0 ||
        s.charityFeeCents < 0 ||
        Math.abs(s.platformFeeCents * 100 - a * 3) > 50 ||
        Math.abs(s.charityFeeCents * 100 - a) > 50
      ) {
        throw new Error(`split of ${a} cents is wrong: ${JSON.stringify(s)}`);
      }
    }
  });

  it("holds the same invariants as a property over any safe amount", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1_000_000_000_000 }), (a) => {
        const s = splitTip(a);
        return (
          s.netAmountCents + s.platformKeepsCents + s.charityFeeCents === a &&
          s.platformKeepsCents >= 0 &&
          s.charityFeeCents >= 0 &&
          s.netAmountCents >= 0
        );
      }),
      { numRuns: 20_000 },
    );
  });

  it("refuses zero, negative and fractional amounts", () => {
    expect(() => splitTip(0)).toThrow(RangeError);
    expect(() => splitTip(-1)).toThrow(RangeError);
    expect(() => splitTip(1.5)).toThrow(RangeError);
  });
});

describe("dollars and cents", () => {
  it("parses whole cents only", () => {
    expect(dollarsToCents(1)).toBe(100);
    expect(dollarsToCents("3")).toBe(300);
    expect(dollarsToCents(12.34)).toBe(1234);
    expect(dollarsToCents("0.10")).toBe(10);
    expect(dollarsToCents(1.005)).toBeNull();
    expect(dollarsToCents(-1)).toBeNull();
    expect(dollarsToCents(Number.NaN)).toBeNull();
    expect(dollarsToCents(1e21)).toBeNull();
  });
  it("formats cents as decimal strings", () => {
    expect(centsToDollars(4900)).toBe("49.00");
    expect(centsToDollars(5)).toBe("0.05");
    expect(centsToDollars(-105)).toBe("-1.05");
  });
  it("round-trips every cent amount as a property", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10 ** 12 }), (c) => dollarsToCents(centsToDollars(c)) === c),
    );
  });
});
