// Owns the JSON shapes of money out: payouts and payout methods, money as decimal strings.
import { centsToDollars } from "../ledger/money.ts";
import type { PayoutRecord } from "../ledger/types.ts";
import type { PayoutMethod } from "./payout-store.ts";

export function payoutJson(p: PayoutRecord) {
  return {
    id: p.id,
    user_id: p.userId,
    status: p.status,
    amount: centsToDollars(p.amountCents),
    currency: "USD",
    provider: p.provider,
    provider_reference: p.providerTransferId,
    failure_reason: p.failureReason,
    attempts: p.attempts,
    round: p.round,
    created_at: p.createdAt,
    updated_at: p.updatedAt,
    paid_at: p.paidAt,
  };
}

export function payoutMethodJson(m: PayoutMethod) {
  return {
    provider: m.provider,
    account_holder_name: m.accountHolderName,
    country: m.country,
    currency: m.currency,
    account_last4: m.accountLast4,
    created_at: m.createdAt,
  };
}
