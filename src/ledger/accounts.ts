// Owns account identity and placement: which shard owns an account, and the ids of the
// per-shard system accounts. User accounts share their user's uuid.

export type SystemAccountKind =
  | "platform_revenue"
  | "charity"
  | "stripe_clearing"
  | "payouts_clearing"
  | "receivables";

const SYSTEM_KIND_NUMBER: Record<SystemAccountKind, number> = {
  platform_revenue: 1,
  charity: 2,
  stripe_clearing: 3,
  payouts_clearing: 4,
  receivables: 5,
};
export const SYSTEM_ACCOUNT_KINDS = Object.keys(SYSTEM_KIND_NUMBER) as SystemAccountKind[];
const SYSTEM_PREFIX = "00000000-0000-0000-";

/**
 * System accounts exist once per shard so a shard posts fee legs to accounts it owns, without
 * waiting on another shard. Their id ends in the shard number in hex, so shardOf() finds it.
 */
export function systemAccountId(kind: SystemAccountKind, shard: number): string {
  const k = SYSTEM_KIND_NUMBER[kind].toString(16).padStart(4, "0");
  return `${SYSTEM_PREFIX}${k}-${shard.toString(16).padStart(12, "0")}`;
}

export function isSystemAccount(id: string): boolean {
  return id.startsWith(SYSTEM_PREFIX);
}

export function systemAccountCode(kind: SystemAccountKind, shard: number): string {
  return `${kind}:${shard}`;
}

/** Uuids are random in their last digits; the last 32 bits spread accounts evenly over shards. */
export function shardOf(accountId: string, shards: number): number {
  return Number.parseInt(accountId.slice(-8), 16) % shards;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (s: string): boolean => UUID_RE.test(s);
