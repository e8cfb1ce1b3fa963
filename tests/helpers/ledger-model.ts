// Owns the reference model of the ledger for tests/integration/ledger-model.test.ts: the rules of
// src/ledger (decide, fraud, fee split) rewritten in plain TypeScript with no shards, no WAL and no
// Postgres, so a disagreement with the real ledger is a bug in one of the two. It deliberately
// shares no code with src/ledger: a wrong rule there must not be copied into the prediction.
import type { AccountStatus, TransactionRecord, UserCommand } from "../../src/ledger/types.ts";

/** The documented defaults (src/config.ts); the test asserts the core runs with them. */
export const MODEL_LIMITS = {
  largeTxCents: 500_00,
  maxTxPerHour: 10,
  maxVolumePerHourCents: 1000_00,
} as const;

export type SystemKind =
  | "platform_revenue"
  | "charity"
  | "stripe_clearing"
  | "payouts_clearing"
  | "receivables";
export const SYSTEM_KINDS: SystemKind[] = [
  "platform_revenue",
  "charity",
  "stripe_clearing",
  "payouts_clearing",
  "receivables",
];

export interface ModelView {
  id: string;
  balanceCents: number;
  reservedCents: number;
  availableCents: number;
  debtCents: number;
  withdrawableCents: number;
  currency: "USD";
  status: AccountStatus;
  version: number;
}

/** What the first answer to a key was; `result` is the real ledger's, learned after it agreed. */
export interface ModelKey {
  fingerprint: string;
  result: unknown;
}

interface ModelPayout {
  amountCents: number;
  status: "pending" | "completed" | "failed";
  /** The payout's lifecycle and attempt round (admin retries start a new one). */
  life: "pending" | "processing" | "paid" | "failed" | "returned";
  round: number;
  /** The real reservation's createdAt: a post or void answers the same transaction row. */
  createdAt: string | null;
}

interface ModelAccount {
  id: string;
  balanceCents: number;
  reservedCents: number;
  debtCents: number;
  /** Net tips received and still held, minus payouts reserved or paid (never purchased credits). */
  earnedCents: number;
  status: AccountStatus;
  version: number;
  /** Amounts of allowed outgoing tips and payout reservations (a sequence lasts far less than 1 h). */
  outgoingCents: number[];
  keys: Map<string, ModelKey>;
  payouts: Map<string, ModelPayout>;
}

/** The transaction a success must carry; id and createdAt are null when the ledger picks them. */
export type ExpectedTx = Omit<TransactionRecord, "id" | "createdAt"> & {
  id: string | null;
  createdAt: string | null;
};

/** A payout as the model has it. */
export interface PayoutSummary {
  accountId: string;
  payoutId: string;
  amountCents: number;
  pending: boolean;
  round: number;
  life: ModelPayout["life"];
}

/** What the deciding process believes where it may differ from the model (see apply). */
export interface Believed {
  recipientStatus?: AccountStatus;
}

export type Prediction =
  | { outcome: "ok"; transaction: ExpectedTx | null; account: ModelView; key: ModelKey }
  /** A payout outcome or retry: idempotent by state, answered with the payout. */
  | { outcome: "payout"; applied: boolean; status: ModelPayout["life"]; round: number; account: ModelView }
  | { outcome: "replay"; key: ModelKey }
  | { outcome: "refused"; code: string; rule: string | null };

/** Fees of a tip, computed independently of src/ledger/fee-split.ts: 3% and 1%, half up. */
export function modelFees(amountCents: number): { platformCents: number; charityCents: number } {
  return {
    platformCents: Math.floor((amountCents * 3 + 50) / 100),
    charityCents: Math.floor((amountCents + 50) / 100),
  };
}

/** The request a key is bound to: the command without its key (and without free-text reasons). */
function fingerprint(cmd: UserCommand): string {
  const { key: _key, reason: _reason, ...body } = cmd as UserCommand & { reason?: string };
  return JSON.stringify(body, Object.keys(body).sort());
}

const ownerOf = (cmd: UserCommand) => (cmd.kind === "tip" ? cmd.fromAccountId : cmd.accountId);

export class LedgerModel {
  private readonly accounts = new Map<string, ModelAccount>();
  /** Totals of each kind of system account over all shards (where a shard posts is not modelled). */
  readonly system: Record<SystemKind, number>;

  constructor(system: Record<SystemKind, number>) {
    this.system = { ...system };
  }

  addUser(id: string): void {
    this.accounts.set(id, {
      id,
      balanceCents: 0,
      reservedCents: 0,
      debtCents: 0,
      earnedCents: 0,
      status: "active",
      version: 0,
      outgoingCents: [],
      keys: new Map(),
      payouts: new Map(),
    });
  }

  userIds(): string[] {
    return [...this.accounts.keys()];
  }

  view(id: string): ModelView {
    const a = this.accounts.get(id)!;
    return {
      id,
      balanceCents: a.balanceCents,
      reservedCents: a.reservedCents,
      availableCents: a.balanceCents - a.reservedCents,
      debtCents: a.debtCents,
      withdrawableCents: Math.max(0, a.earnedCents - a.debtCents),
      currency: "USD",
      status: a.status,
      version: a.version,
    };
  }

  /** Payout ids reserved so far, with their owner, in the order they were reserved. */
  payouts(): PayoutSummary[] {
    const out: PayoutSummary[] = [];
    for (const a of this.accounts.values()) {
      for (const [id, p] of a.payouts)
        out.push({
          accountId: a.id,
          payoutId: id,
          amountCents: p.amountCents,
          pending: p.status === "pending",
          round: p.round,
          life: p.life,
        });
    }
    return out;
  }

  private latest: { accountId: string; payoutId: string } | null = null;

  /** The payout reserved last in this run. */
  latestPayout(): PayoutSummary | null {
    const l = this.latest;
    return l ? (this.payouts().find((p) => p.payoutId === l.payoutId) ?? null) : null;
  }

  /** After the real ledger agreed with an "ok" prediction: remember its answer for replays. */
  learn(cmd: UserCommand, prediction: Prediction, result: { transaction?: TransactionRecord }): void {
    if (prediction.outcome !== "ok") return;
    prediction.key.result = result;
    if (cmd.kind === "reserve_payout" && result.transaction) {
      this.accounts.get(cmd.accountId)!.payouts.get(cmd.payoutId)!.createdAt = result.transaction.createdAt;
    }
  }

  /**
   * Decides `cmd` as the ledger must, and applies it to the model when it succeeds.
   * `believed.recipientStatus`: the status a tip's recipient is decided with, when the deciding
   * process may know an older one than the model (shards spread over processes).
   */
  apply(cmd: UserCommand, believed: Believed = {}): Prediction {
    const owner = this.accounts.get(ownerOf(cmd));
    if (!owner) return refused("not_found");
    // Outcomes and retries are idempotent by the payout's state, never by key.
    if (cmd.kind === "payout_outcome" || cmd.kind === "retry_payout") {
      const p = this.payoutStep(cmd, owner);
      clampEarned(owner);
      return p;
    }
    const seen = owner.keys.get(cmd.key);
    if (seen) {
      return seen.fingerprint === fingerprint(cmd)
        ? { outcome: "replay", key: seen }
        : refused("idempotency_conflict");
    }
    const p = this.decide(cmd, owner, believed);
    if (p.outcome === "ok") owner.keys.set(cmd.key, p.key);
    return p;
  }

  private payoutStep(
    cmd: Extract<UserCommand, { kind: "payout_outcome" | "retry_payout" }>,
    owner: ModelAccount,
  ): Prediction {
    const p = owner.payouts.get(cmd.payoutId);
    if (!p) return refused("not_found");
    const answer = (applied: boolean): Prediction => ({
      outcome: "payout",
      applied,
      status: p.life,
      round: p.round,
      account: this.view(owner.id),
    });
    if (cmd.kind === "retry_payout") {
      if (p.round > cmd.round) return answer(false);
      if (p.life !== "failed") return refused("conflict");
      const blocked = this.fraudBlock(owner, null, p.amountCents);
      if (blocked) return refused("fraud_blocked", blocked);
      if (Math.min(owner.balanceCents - owner.reservedCents, withdrawable(owner)) < p.amountCents)
        return refused("insufficient_funds");
      owner.reservedCents += p.amountCents;
      owner.earnedCents -= p.amountCents;
      owner.version++;
      // A retry is not a new outgoing transaction: the payout counted once, when reserved.
      p.round++;
      p.life = "pending";
      p.status = "pending";
      return answer(true);
    }
    const allowed: Record<ModelPayout["life"], string[]> = {
      pending: ["processing", "paid", "failed", "returned"],
      processing: ["paid", "failed", "returned"],
      paid: ["returned"],
      failed: [],
      returned: [],
    };
    if (cmd.round !== p.round || !allowed[p.life].includes(cmd.state)) return answer(false);
    const amount = p.amountCents;
    if (cmd.state === "processing") {
      p.life = "processing";
      return answer(true);
    }
    if (p.life === "paid") {
      // returned after paid: credited back, earned again.
      owner.balanceCents += amount;
      owner.earnedCents += amount;
      owner.version++;
      this.system.payouts_clearing -= amount;
      p.life = "returned";
      return answer(true);
    }
    owner.reservedCents -= amount;
    owner.version++;
    if (cmd.state === "paid") {
      owner.balanceCents -= amount;
      this.system.payouts_clearing += amount;
      p.status = "completed";
    } else {
      owner.earnedCents += amount;
      p.status = "failed";
    }
    p.life = cmd.state;
    return answer(true);
  }

  private decide(cmd: UserCommand, owner: ModelAccount, believed: Believed): Prediction {
    const key: ModelKey = { fingerprint: fingerprint(cmd), result: null };
    const ok = (transaction: ExpectedTx | null): Prediction => ({
      outcome: "ok",
      transaction,
      account: this.view(owner.id),
      key,
    });
    switch (cmd.kind) {
      case "deposit": {
        if (!validAmount(cmd.amountCents)) return refused("validation_error");
        const repay = Math.min(owner.debtCents, cmd.amountCents);
        owner.debtCents -= repay;
        owner.balanceCents += cmd.amountCents - repay;
        owner.version++;
        this.system.stripe_clearing -= cmd.amountCents;
        this.system.receivables += repay;
        return ok(
          tx("purchase", "completed", owner.id, null, owner.id, cmd.amountCents, 0, 0, cmd.amountCents, {
            ...(repay > 0 ? { debt_repaid_cents: repay } : {}),
          }),
        );
      }
      case "tip": {
        if (!validAmount(cmd.amountCents)) return refused("validation_error");
        const to = this.accounts.get(cmd.toAccountId);
        if (!to) return refused("not_found");
        const blocked = this.fraudBlock(owner, to, cmd.amountCents, believed.recipientStatus);
        if (blocked) return refused("fraud_blocked", blocked);
        if (owner.balanceCents - owner.reservedCents < cmd.amountCents) return refused("insufficient_funds");
        const fees = modelFees(cmd.amountCents);
        const net = cmd.amountCents - fees.platformCents;
        owner.balanceCents -= cmd.amountCents;
        owner.version++;
        owner.outgoingCents.push(cmd.amountCents);
        clampEarned(owner);
        to.balanceCents += net;
        to.earnedCents += net;
        to.version++;
        this.system.platform_revenue += fees.platformCents - fees.charityCents;
        this.system.charity += fees.charityCents;
        return ok(
          tx(
            "tip",
            "completed",
            owner.id,
            owner.id,
            to.id,
            cmd.amountCents,
            fees.platformCents,
            fees.charityCents,
            net,
            {},
          ),
        );
      }
      case "reserve_payout": {
        if (!validAmount(cmd.amountCents)) return refused("validation_error");
        if (owner.payouts.has(cmd.payoutId)) return refused("conflict");
        const blocked = this.fraudBlock(owner, null, cmd.amountCents);
        if (blocked) return refused("fraud_blocked", blocked);
        // Only earned money may be withdrawn, never purchased credits, and not while in debt.
        if (Math.min(owner.balanceCents - owner.reservedCents, withdrawable(owner)) < cmd.amountCents)
          return refused("insufficient_funds");
        owner.reservedCents += cmd.amountCents;
        owner.earnedCents -= cmd.amountCents;
        owner.version++;
        owner.outgoingCents.push(cmd.amountCents);
        this.latest = { accountId: owner.id, payoutId: cmd.payoutId };
        owner.payouts.set(cmd.payoutId, {
          amountCents: cmd.amountCents,
          status: "pending",
          life: "pending",
          round: 1,
          createdAt: null,
        });
        const t = tx(
          "payout",
          "pending",
          owner.id,
          owner.id,
          null,
          cmd.amountCents,
          0,
          0,
          cmd.amountCents,
          {},
        );
        return ok({ ...t, id: cmd.payoutId });
      }
      case "post_payout":
      case "void_payout": {
        const payout = owner.payouts.get(cmd.payoutId);
        if (!payout) return refused("not_found");
        if (payout.status !== "pending") return refused("conflict");
        const amount = payout.amountCents;
        owner.reservedCents -= amount;
        owner.version++;
        if (cmd.kind === "post_payout") {
          payout.status = "completed";
          payout.life = "paid";
          owner.balanceCents -= amount;
          this.system.payouts_clearing += amount;
        } else {
          payout.status = "failed";
          payout.life = "failed";
          owner.earnedCents += amount; // the released reserve was earned money
        }
        // The payout row carries its finishing key and the account right after, so the key
        // replays its first answer from Postgres too; hash and time are the ledger's (null here).
        const metadata: Record<string, unknown> = {
          finish: {
            key: cmd.key,
            hash: null,
            at: null,
            balance_after_cents: owner.balanceCents,
            reserved_after_cents: owner.reservedCents,
            debt_after_cents: owner.debtCents,
            earned_after_cents: owner.earnedCents,
            version_after: owner.version,
            status_after: owner.status,
          },
          ...(cmd.kind === "void_payout" && cmd.reason ? { void_reason: cmd.reason } : {}),
        };
        const t = tx("payout", payout.status, owner.id, owner.id, null, amount, 0, 0, amount, metadata);
        return ok({ ...t, id: cmd.payoutId, createdAt: payout.createdAt });
      }
      case "reversal": {
        if (!validAmount(cmd.amountCents)) return refused("validation_error");
        // What is available is taken back; the rest (reserved money included) becomes debt.
        const taken = Math.min(owner.balanceCents - owner.reservedCents, cmd.amountCents);
        const debt = cmd.amountCents - taken;
        owner.balanceCents -= taken;
        owner.debtCents += debt;
        owner.version++;
        clampEarned(owner);
        this.system.stripe_clearing += cmd.amountCents;
        this.system.receivables -= debt;
        return ok(
          tx(cmd.type, "completed", owner.id, owner.id, null, cmd.amountCents, 0, 0, taken, {
            taken_back_cents: taken,
            debt_cents: debt,
          }),
        );
      }
      case "set_status": {
        owner.status = cmd.status;
        owner.version++;
        return ok(null);
      }
      case "payout_outcome":
      case "retry_payout":
        return this.payoutStep(cmd, owner);
    }
  }

  /** The blocking fraud rule, if any, in the ledger's order: critical rules, then count, then volume. */
  private fraudBlock(
    sender: ModelAccount,
    recipient: ModelAccount | null,
    amountCents: number,
    recipientStatus: AccountStatus | undefined = recipient?.status,
  ): string | null {
    if (recipient && recipient.id === sender.id) return "self_transfer";
    if (sender.status === "suspended" || (recipient && recipientStatus === "suspended"))
      return "suspended_account";
    if (sender.outgoingCents.length + 1 > MODEL_LIMITS.maxTxPerHour) return "high_velocity";
    const volume = sender.outgoingCents.reduce((s, a) => s + a, 0);
    if (volume + amountCents > MODEL_LIMITS.maxVolumePerHourCents) return "high_volume";
    return null; // a large transaction (> largeTxCents) is allowed, only logged
  }
}

/** What a payout may take: earned minus chargeback debt. */
const withdrawable = (a: ModelAccount) => Math.max(0, a.earnedCents - a.debtCents);

/** Spending and reversals take purchased credits first: earned money is what stays available. */
function clampEarned(a: ModelAccount): void {
  a.earnedCents = Math.max(0, Math.min(a.earnedCents, a.balanceCents - a.reservedCents));
}

const validAmount = (a: number) => Number.isSafeInteger(a) && a > 0;

const refused = (code: string, rule: string | null = null): Prediction => ({
  outcome: "refused",
  code,
  rule,
});

function tx(
  type: TransactionRecord["type"],
  status: TransactionRecord["status"],
  accountId: string,
  fromAccountId: string | null,
  toAccountId: string | null,
  amountCents: number,
  platformFeeCents: number,
  charityFeeCents: number,
  netAmountCents: number,
  metadata: Record<string, unknown>,
): ExpectedTx {
  return {
    id: null,
    type,
    status,
    accountId,
    fromAccountId,
    toAccountId,
    amountCents,
    platformFeeCents,
    charityFeeCents,
    netAmountCents,
    currency: "USD",
    stripePaymentId: null,
    metadata,
    createdAt: null,
  };
}
