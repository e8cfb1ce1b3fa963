// Owns the one place the persister changes users.status. The users row mirrors the ledger's
// status (suspensions and reinstatements are ledger events, decided by the account's shard);
// copying the ledger row's status, not the event's, keeps a replayed older event from undoing a
// newer one. Runs inside the batch's transaction, after the ledger rows are updated.
import type pg from "pg";

/** Copies ledger.status to users.status for these accounts, where they differ. */
export async function mirrorUserStatus(client: pg.PoolClient, accountIds: Iterable<string>): Promise<void> {
  await client.query(
    `UPDATE users u SET status = l.status, updated_at = now() FROM ledger l
      WHERE l.id = u.id AND u.id = ANY($1::uuid[]) AND u.status <> l.status`,
    [[...accountIds]],
  );
}
