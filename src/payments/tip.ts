// Owns sending a tip, whichever way it arrives (HTTP body or WebSocket frame): the fields a tip
// may carry and their rules (allowed amounts per kind, the message), the creator lookup, the ledger
// command, and the answer's shape. The edges only add who is asking and the idempotency key.
import { z } from "zod";
import { AppError } from "../errors.ts";
import { dollarsToCents } from "../ledger/money.ts";
import type { TipType, TxResult } from "../ledger/types.ts";
import type { Ledger } from "../shards/ledger.ts";
import type { UserStore } from "../users/user-store.ts";
import { balanceJson, transactionJson } from "./present.ts";

/** Longest tip message, in characters (UTF-16 code units, as JavaScript counts them). */
export const TIP_MESSAGE_MAX_CHARS = 200;

export interface TipDeskDeps {
  ledger: Ledger;
  users: UserStore;
  tipAmountsUsd: number[];
  superlikeAmountsUsd: number[];
}

/** What a tip says, beyond who sends it and its key: shared by the HTTP body and the WS frame. */
export const tipFields = (d: Pick<TipDeskDeps, "tipAmountsUsd" | "superlikeAmountsUsd">) => {
  const allowed: Record<TipType, Set<number>> = {
    tip: new Set(d.tipAmountsUsd.map((a) => dollarsToCents(a)!)),
    superlike: new Set(d.superlikeAmountsUsd.map((a) => dollarsToCents(a)!)),
  };
  const text: Record<TipType, string> = {
    tip: d.tipAmountsUsd.join(", "),
    superlike: d.superlikeAmountsUsd.join(", "),
  };
  return {
    shape: {
      to_creator_username: z.string().min(1).max(30),
      amount: z.number(),
      kind: z.enum(["tip", "superlike"]).optional(),
      message: z.string().max(TIP_MESSAGE_MAX_CHARS).optional(),
    },
    /** The amount must be one of its kind's; checked after parsing, as it depends on `kind`. */
    refine(b: { amount: number; kind?: TipType | undefined }, ctx: z.RefinementCtx) {
      const kind = b.kind ?? "tip";
      if (!allowed[kind].has(dollarsToCents(b.amount) ?? -1)) {
        ctx.addIssue({
          code: "custom",
          path: ["amount"],
          message: `a ${kind} is one of these dollar amounts: ${text[kind]}`,
        });
      }
    },
  };
};

export interface TipInput {
  to_creator_username: string;
  amount: number;
  kind?: TipType | undefined;
  message?: string | undefined;
}

export interface TipAnswer {
  status: 201;
  body: { transaction: ReturnType<typeof transactionJson>; balance: ReturnType<typeof balanceJson> };
}

export class TipDesk {
  constructor(private readonly d: TipDeskDeps) {}

  /** Sends a validated tip from `fromUserId`; resolves once durable, or rejects with an AppError. */
  async send(fromUserId: string, key: string, b: TipInput): Promise<TipAnswer> {
    const creator = await this.d.users.creatorByUsername(b.to_creator_username);
    if (!creator)
      throw new AppError("not_found", "creator not found", { to_creator_username: b.to_creator_username });
    const type = b.kind ?? "tip";
    const r = (await this.d.ledger.submit({
      kind: "tip",
      key,
      fromAccountId: fromUserId,
      toAccountId: creator.id,
      amountCents: dollarsToCents(b.amount)!,
      // Only what was sent: a plain tip keeps the fingerprint (and WAL form) it always had.
      ...(type === "superlike" ? { type } : {}),
      ...(b.message !== undefined ? { metadata: { message: b.message } } : {}),
    })) as TxResult;
    return {
      status: 201,
      body: { transaction: transactionJson(r.transaction), balance: balanceJson(r.account) },
    };
  }
}
