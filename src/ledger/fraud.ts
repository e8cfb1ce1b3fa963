// Owns the seed's five fraud rules, evaluated inside the sender's shard so a velocity check never
// races another command of the same sender. Pure: state in, verdict out; nothing is changed, and
// the velocity window only moves when an event is applied (recordOutgoing).
import type { AccountStatus, FraudLimits, FraudRule, Severity, TxType } from "./types.ts";

export const VELOCITY_WINDOW_MS = 3600_000;

/**
 * Outgoing transactions (tips, payouts) of the last hour, oldest first. Only allowed ones enter,
 * the count rule refuses more than maxTxPerHour, and each entry drops out the next time one is
 * recorded an hour later, so it holds about that many.
 */
export interface VelocityWindow {
  atMs: number[];
  amountCents: number[];
}

export const emptyWindow = (): VelocityWindow => ({ atMs: [], amountCents: [] });

/** Index of the first entry still inside the hour before `nowMs`. */
function firstInWindow(w: VelocityWindow, nowMs: number): number {
  let i = 0;
  while (i < w.atMs.length && w.atMs[i]! <= nowMs - VELOCITY_WINDOW_MS) i++;
  return i;
}

/** Records an applied outgoing transaction, dropping what fell out of the hour before it. */
export function recordOutgoing(w: VelocityWindow, atMs: number, amountCents: number): void {
  const drop = firstInWindow(w, atMs);
  if (drop > 0) {
    w.atMs.splice(0, drop);
    w.amountCents.splice(0, drop);
  }
  // Replay may deliver entries slightly out of time order across restarts; keep the list sorted.
  let i = w.atMs.length;
  while (i > 0 && w.atMs[i - 1]! > atMs) i--;
  w.atMs.splice(i, 0, atMs);
  w.amountCents.splice(i, 0, amountCents);
}

/**
 * Which transactions count toward the velocity and volume rules: outgoing ones (tips, payouts; not
 * money in). A transaction counts once, when it is created (a payout when reserved, whatever
 * becomes of it), in memory and when rebuilt from Postgres alike.
 */
export const countsForVelocity = (type: TxType): boolean =>
  type === "tip" || type === "superlike" || type === "payout";

export interface FraudHit {
  rule: FraudRule;
  severity: Severity;
  context: Record<string, unknown>;
}

export interface FraudVerdict {
  hits: FraudHit[];
  /** The first high or critical hit; the command is refused when set. */
  block: FraudHit | null;
}

export interface FraudInput {
  amountCents: number;
  senderStatus: AccountStatus;
  /** Null for commands without a recipient (payouts). */
  recipientId: string | null;
  senderId: string;
  recipientStatus: AccountStatus | null;
  window: Readonly<VelocityWindow>;
  nowMs: number;
  limits: FraudLimits;
}

export function evaluateFraud(input: FraudInput): FraudVerdict {
  const { amountCents, limits, window } = input;
  // Critical rules first: they block outright, and nothing else about the attempt matters.
  if (input.recipientId !== null && input.recipientId === input.senderId) {
    const hit: FraudHit = { rule: "self_transfer", severity: "critical", context: {} };
    return { hits: [hit], block: hit };
  }
  if (input.senderStatus === "suspended" || input.recipientStatus === "suspended") {
    const hit: FraudHit = {
      rule: "suspended_account",
      severity: "critical",
      context: { suspended: input.senderStatus === "suspended" ? "sender" : "recipient" },
    };
    return { hits: [hit], block: hit };
  }
  const first = firstInWindow(window, input.nowMs);
  const hits: FraudHit[] = [];
  const count = window.atMs.length - first;
  if (count + 1 > limits.maxTxPerHour) {
    hits.push({
      rule: "high_velocity",
      severity: "high",
      context: { tx_last_hour: count, limit: limits.maxTxPerHour },
    });
  }
  let volume = 0;
  for (let i = first; i < window.amountCents.length; i++) volume += window.amountCents[i]!;
  if (volume + amountCents > limits.maxVolumePerHourCents) {
    hits.push({
      rule: "high_volume",
      severity: "high",
      context: { sent_last_hour_cents: volume, limit_cents: limits.maxVolumePerHourCents },
    });
  }
  if (amountCents > limits.largeTxCents) {
    hits.push({
      rule: "large_transaction",
      severity: "medium",
      context: { limit_cents: limits.largeTxCents },
    });
  }
  return { hits, block: hits.find((h) => h.severity === "high") ?? null };
}
