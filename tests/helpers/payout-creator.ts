// A creator ready to withdraw, as the money-out tests set one up through the API: 48.50 earned
// (a fan's 50.00 tip, settled) and a US payout method with the given provider and test account
// number (its last four digits pick the stand-in's behaviour), then a withdrawal of 20.00.
import { randomUUID } from "node:crypto";
import { expect } from "vitest";
import type { Api } from "./api.ts";
import { settle } from "./ledger.ts";

export async function creatorWithMethod(api: Api, provider: "wise" | "airwallex", accountNumber: string) {
  const creator = await api.register("creator");
  const fan = await api.register();
  await api.fund(fan.id, 5000);
  await api.core.ledger.submit({
    kind: "tip",
    key: randomUUID(),
    fromAccountId: fan.id,
    toAccountId: creator.id,
    amountCents: 5000,
  });
  await settle(api.core);
  const m = await api.call("PUT", "/api/payments/payout-method", {
    token: creator.token,
    body: {
      user_id: creator.id,
      provider,
      account_holder_name: "Test Creator",
      country: "US",
      currency: "USD",
      account_number: accountNumber,
      routing_number: "021000021",
    },
  });
  expect(m.status, JSON.stringify(m.body)).toBe(200);
  return creator;
}

/** Asks for a 20.00 withdrawal (answered 202) and returns the payout's id. */
export async function withdraw20(api: Api, creator: { id: string; token: string }): Promise<string> {
  const r = await api.call("POST", "/api/payments/withdraw", {
    token: creator.token,
    body: { user_id: creator.id, amount: 20 },
    headers: { "idempotency-key": randomUUID() },
  });
  expect(r.status, JSON.stringify(r.body)).toBe(202);
  return r.body.payout.id;
}
