// Owns the JSON shapes of money on the API: transactions and balances, money as decimal strings
// ("12.34"), snake_case fields as in the seed brief. Used by every route that shows them.
import { centsToDollars } from "../ledger/money.ts";
import type { AccountView, TransactionRecord } from "../ledger/types.ts";

export function transactionJson(tx: TransactionRecord) {
  return {
    id: tx.id,
    from_user_id: tx.fromAccountId,
    to_user_id: tx.toAccountId,
    amount: centsToDollars(tx.amountCents),
    platform_fee: centsToDollars(tx.platformFeeCents),
    charity_fee: centsToDollars(tx.charityFeeCents),
    net_amount: centsToDollars(tx.netAmountCents),
    type: tx.type,
    status: tx.status,
    created_at: tx.createdAt,
  };
}

export function balanceJson(a: AccountView) {
  return {
    user_id: a.id,
    balance: centsToDollars(a.balanceCents),
    reserved_balance: centsToDollars(a.reservedCents),
    available_balance: centsToDollars(a.availableCents),
    /** What a withdrawal may take: earned money (tips received), minus chargeback debt. */
    withdrawable_balance: centsToDollars(a.withdrawableCents),
    currency: a.currency,
  };
}
