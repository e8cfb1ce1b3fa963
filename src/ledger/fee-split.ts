// Owns the tip fee split. Of a tip of A cents the platform takes 3% and passes 1% of A of that on
// to charity; the creator gets the rest. Percentages round half up to whole cents, and the net is
// what is left, so the legs always sum to exactly A:  net + (platform - charity) + charity = A.

export interface FeeSplit {
  amountCents: number;
  /** 3% of the amount, half up; includes the charity part. */
  platformFeeCents: number;
  /** 1% of the amount, half up; paid out of the platform fee. */
  charityFeeCents: number;
  /** What the platform keeps: platformFee - charityFee. */
  platformKeepsCents: number;
  /** What the creator receives: amount - platformFee. */
  netAmountCents: number;
}

export const PLATFORM_FEE_BPS = 300;
export const CHARITY_FEE_BPS = 100;

/** bps of a whole number of cents, rounded half up, in integer arithmetic only. */
export function percentHalfUp(amountCents: number, bps: number): number {
  return Math.floor((amountCents * bps + 5000) / 10000);
}

export function splitTip(amountCents: number): FeeSplit {
  if (!Number.isSafeInteger(amountCents) || amountCents <= 0) {
    throw new RangeError(`tip amount must be a positive whole number of cents, got ${amountCents}`);
  }
  const platformFeeCents = percentHalfUp(amountCents, PLATFORM_FEE_BPS);
  const charityFeeCents = percentHalfUp(amountCents, CHARITY_FEE_BPS);
  return {
    amountCents,
    platformFeeCents,
    charityFeeCents,
    platformKeepsCents: platformFeeCents - charityFeeCents,
    netAmountCents: amountCents - platformFeeCents,
  };
}
