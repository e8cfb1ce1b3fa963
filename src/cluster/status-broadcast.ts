// Owns telling other processes at once that an account's status changed (LEDGER_SPREAD). A tip
// is decided by the sender's shard, which reads the recipient's status from its directory; for a
// recipient another process owns, that entry is a read of Postgres renewed every few seconds, so a
// suspension decided there would otherwise reach tips decided here only after that time plus the
// WAL's lag. The owner publishes each status change once it is durable; every other process puts
// it in its directory (a newer version always wins there, so a late or repeated message cannot
// bring an old status back). Pub/sub is at most once: a message lost while a connection is down
// leaves the directory's renewal as the bound, as without this.
import type { Logger } from "pino";
import type { WalEvent } from "../ledger/events.ts";
import type { AccountStatus } from "../ledger/types.ts";
import type { RedisClient } from "../redis/connect.ts";

/** A status change as published: account id, status, version. */
type StatusMessage = [id: string, status: AccountStatus, version: number];

/** What the broadcast needs of the ledger. */
export interface StatusLearner {
  /** Whether a recovery is replaying events (they were published when first made durable). */
  recovering(): boolean;
  /** A status change another process decided, for an account whose shard is not owned here. */
  learnStatus(id: string, status: AccountStatus, version: number): void;
}

export class StatusBroadcast {
  private started = false;
  private stopped = false;

  constructor(
    private readonly d: {
      /** Any connection not in subscriber mode; publishes are not awaited by the ledger. */
      publisher: RedisClient;
      /** A connection of its own, in subscriber mode from `start()` on. */
      subscriber: RedisClient;
      /** redisKeys(prefix).accountStatus */
      channel: string;
      ledger: StatusLearner;
      logger: Logger;
    },
  ) {}

  /** The ledger's durable observer: publishes the status changes this process decided. */
  readonly durable = (events: WalEvent[]): void => {
    if (this.stopped || this.d.ledger.recovering()) return;
    for (const ev of events) {
      if (ev.t !== "status") continue;
      const msg: StatusMessage = [ev.state.id, ev.state.status, ev.state.version];
      this.d.publisher.publish(this.d.channel, JSON.stringify(msg)).catch((err: Error) => {
        this.d.logger.warn(
          { err: err.message, user_id: ev.state.id },
          "publishing a status change failed; other processes learn it when they read the account again",
        );
      });
    }
  };

  /** Subscribes (resolves once subscribed). */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.d.subscriber.on("message", this.onMessage);
    await this.d.subscriber.subscribe(this.d.channel);
  }

  stop(): void {
    this.stopped = true;
    this.d.subscriber.off("message", this.onMessage);
    this.d.subscriber.disconnect();
  }

  private readonly onMessage = (channel: string, message: string): void => {
    if (this.stopped || channel !== this.d.channel) return;
    let msg: unknown;
    try {
      msg = JSON.parse(message);
    } catch {
      msg = null;
    }
    if (!isStatusMessage(msg)) {
      this.d.logger.error({ message: message.slice(0, 200) }, "a published status change is malformed");
      return;
    }
    this.d.ledger.learnStatus(msg[0], msg[1], msg[2]);
  };
}

function isStatusMessage(m: unknown): m is StatusMessage {
  return (
    Array.isArray(m) &&
    m.length === 3 &&
    typeof m[0] === "string" &&
    (m[1] === "active" || m[1] === "suspended") &&
    Number.isSafeInteger(m[2])
  );
}
