// Owns the names of the log events operators watch (the `event` field; the README's "Log events"
// table): dashboards and alerts match on them, so every process logs them from this one list.
export const LOG_EVENTS = {
  fraudTriggered: "fraud.triggered",
  transactionFailed: "transaction.failed",
  payoutError: "payout.error",
  reconcileDiscrepancy: "reconcile.discrepancy",
  reconcileFailed: "reconcile.failed",
} as const;
