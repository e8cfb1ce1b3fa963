// Owns the ledger's vocabulary: commands callers submit, the state a shard keeps per account,
// the events a decision produces (what the WAL carries), and the results callers get back.
// All money is integer cents.

export type AccountStatus = "active" | "suspended";
/** payout_return: a paid payout the bank sent back, credited to the creator as its own transaction. */
export type TxType = "purchase" | "tip" | "superlike" | "payout" | "refund" | "chargeback" | "payout_return";
/** The two kinds of tip: a superlike is a tip the overlay highlights, with its own amounts. */
export type TipType = "tip" | "superlike";
export type TxStatus = "pending" | "completed" | "failed";
/** Severities of fraud rules, mildest first: high and critical block. */
export const SEVERITIES = ["low", "medium", "high", "critical"] as const;
export type Severity = (typeof SEVERITIES)[number];
/** The seed's fraud rules, plus chargeback_debt (a reversal that left the account owing). */
export const FRAUD_RULES = [
  "large_transaction",
  "high_velocity",
  "high_volume",
  "self_transfer",
  "suspended_account",
  "chargeback_debt",
] as const;
export type FraudRule = (typeof FRAUD_RULES)[number];

/** Commands: every mutating command carries the caller's idempotency key. */
export interface TipCommand {
  kind: "tip";
  key: string;
  fromAccountId: string;
  toAccountId: string;
  amountCents: number;
  /** Stored as the transaction's type; absent means "tip". */
  type?: TipType;
  metadata?: Record<string, unknown>;
}
export interface DepositCommand {
  kind: "deposit";
  key: string;
  accountId: string;
  amountCents: number;
  stripePaymentId?: string;
  metadata?: Record<string, unknown>;
}
export interface ReservePayoutCommand {
  kind: "reserve_payout";
  key: string;
  accountId: string;
  payoutId: string;
  amountCents: number;
  /** Where the money goes (kept on the payout record; not part of the request fingerprint). */
  provider?: string;
  providerRecipientId?: string;
  metadata?: Record<string, unknown>;
}
export interface PostPayoutCommand {
  kind: "post_payout";
  key: string;
  accountId: string;
  payoutId: string;
}
export interface VoidPayoutCommand {
  kind: "void_payout";
  key: string;
  accountId: string;
  payoutId: string;
  reason?: string;
}
/**
 * What the provider did with a payout, reported by the payout worker through the outcome channel.
 * States only move forward: an outcome that would move one back (or repeats one) changes nothing.
 */
export interface PayoutOutcomeCommand {
  kind: "payout_outcome";
  key: string;
  accountId: string;
  payoutId: string;
  /** The attempt round the outcome belongs to (an admin retry starts a new one). */
  round: number;
  state: "processing" | "paid" | "failed" | "returned";
  providerTransferId?: string;
  failureReason?: string;
  attempts?: number;
}
/** An admin's retry of a failed payout: the amount is reserved again and a new round starts. */
export interface RetryPayoutCommand {
  kind: "retry_payout";
  key: string;
  accountId: string;
  payoutId: string;
  /** The round that failed; retrying a round already retried changes nothing. */
  round: number;
}
export interface ReversalCommand {
  kind: "reversal";
  key: string;
  accountId: string;
  amountCents: number;
  type: "refund" | "chargeback";
  stripePaymentId?: string;
  metadata?: Record<string, unknown>;
}
export interface SetStatusCommand {
  kind: "set_status";
  key: string;
  accountId: string;
  status: AccountStatus;
  reason?: string;
}
/** Internal: the recipient side of tips whose debit is already durable in the sender's WAL. */
export interface CreditCommand {
  kind: "credit";
  accountId: string;
  items: CreditItem[];
}
export interface CreditItem {
  txId: string;
  amountCents: number;
}

export type UserCommand =
  | TipCommand
  | DepositCommand
  | ReservePayoutCommand
  | PostPayoutCommand
  | VoidPayoutCommand
  | PayoutOutcomeCommand
  | RetryPayoutCommand
  | ReversalCommand
  | SetStatusCommand;
export type Command = UserCommand | CreditCommand;

/** The part of an account that Postgres stores and the WAL carries after every change. */
export interface AccountState {
  id: string;
  balanceCents: number;
  reservedCents: number;
  debtCents: number;
  status: AccountStatus;
  /** Bumped once per change; Postgres applies a WAL state only on top of the version before it. */
  version: number;
  /**
   * What the account earned and still holds: net tips received, minus what is paid out or
   * reserved for a payout; spending and reversals take from purchased credits first, so it is
   * clamped to what stays available. Purchased credits never enter it. 0 <= earned <= available.
   * What may be withdrawn is this minus chargeback debt (withdrawableOf).
   */
  earnedCents: number;
}

export type PayoutStatus = "pending" | "processing" | "paid" | "failed" | "returned";

/** A payout's lifecycle, kept by its owner's shard and carried by the WAL with every transition. */
export interface PayoutRecord {
  id: string;
  userId: string;
  amountCents: number;
  provider: string | null;
  providerRecipientId: string | null;
  providerTransferId: string | null;
  status: PayoutStatus;
  failureReason: string | null;
  /** Provider attempts reported by the worker (across rounds). */
  attempts: number;
  /** 1, plus one per admin retry of a failed payout. */
  round: number;
  /** Bumped by every transition; Postgres and replay apply only a newer one. */
  seq: number;
  createdAt: string;
  updatedAt: string;
  paidAt: string | null;
  /** The transaction that credited a returned payout back. */
  returnTxId: string | null;
}

export interface TransactionRecord {
  id: string;
  type: TxType;
  status: TxStatus;
  /** The account whose shard decided it, and the scope of its idempotency key. */
  accountId: string;
  fromAccountId: string | null;
  toAccountId: string | null;
  amountCents: number;
  platformFeeCents: number;
  charityFeeCents: number;
  netAmountCents: number;
  currency: "USD";
  stripePaymentId: string | null;
  metadata: Record<string, unknown>;
  createdAt: string;
}

/** One posting of a transaction; all postings of a transaction sum to zero. */
export interface Posting {
  accountId: string;
  amountCents: number;
}

export interface FraudLogRecord {
  id: string;
  userId: string;
  rule: FraudRule;
  severity: Severity;
  amountCents: number | null;
  action: "allowed" | "blocked" | "flagged";
  context: Record<string, unknown>;
  createdAt: string;
}

export interface AccountView {
  id: string;
  balanceCents: number;
  reservedCents: number;
  availableCents: number;
  debtCents: number;
  /** What a payout may take now: earned minus chargeback debt, never below 0. */
  withdrawableCents: number;
  currency: "USD";
  status: AccountStatus;
  version: number;
}

export interface TxResult {
  transaction: TransactionRecord;
  /** The deciding account right after this command (the sender for a tip). */
  account: AccountView;
  /** True when the idempotency key had already been used with the same request. */
  replayed: boolean;
}

export interface StatusResult {
  account: AccountView;
  replayed: boolean;
}

/** A payout outcome or retry: the payout and its owner's account after it. `applied` is false
 * when the outcome changed nothing (late, repeated or out of order). */
export interface PayoutResult {
  payout: PayoutRecord;
  account: AccountView;
  applied: boolean;
  replayed: boolean;
}

/** What a shard may know of an account it does not own: read-only, kept by the directory. */
export interface DirectoryEntry {
  kind: "user" | "system";
  status: AccountStatus;
  /** The account's version this entry was taken at; a newer entry always wins. */
  version: number;
}

/** Why the core refused a command: a stable code, a message and details for the caller. The
 * HTTP edge maps codes to statuses; the core knows nothing of HTTP. */
export type RefusalCode =
  | "validation_error"
  | "not_found"
  | "conflict"
  | "idempotency_conflict"
  | "insufficient_funds"
  | "fraud_blocked";

export interface Refusal {
  code: RefusalCode;
  message: string;
  details?: Record<string, unknown>;
}

/** The fraud rules' thresholds, in cents (derived from configuration by the entry point). */
export interface FraudLimits {
  largeTxCents: number;
  maxTxPerHour: number;
  maxVolumePerHourCents: number;
}
