// Owns the API's JSON shapes: money as decimal strings ("12.34"), snake_case fields as in the
// seed brief. One function per shape, used by every route that shows it.
import { centsToDollars } from "../ledger/money.ts";
import type { AccountView, TransactionRecord } from "../ledger/types.ts";
import type { UserRow } from "../users/user-store.ts";

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
    currency: a.currency,
  };
}

/** A user as its owner sees it (with email); `publicUserJson` is what anyone may see. */
export function userJson(u: UserRow, status: string = u.status) {
  return {
    id: u.id,
    email: u.email,
    username: u.username,
    display_name: u.display_name,
    bio: u.bio,
    avatar_url: u.avatar_url,
    role: u.role,
    status,
    created_at: u.created_at.toISOString(),
  };
}

export function publicUserJson(u: UserRow, status: string = u.status) {
  const { email: _email, ...rest } = userJson(u, status);
  return rest;
}
