// Owns password hashing (scrypt in a piscina worker pool, off the event loop) and the password
// policy.
import { fileURLToPath } from "node:url";
import { Piscina } from "piscina";
import { AppError } from "../errors.ts";

export const PASSWORD_MIN = 10;
export const PASSWORD_MAX = 128;

/** Length 10..128 with at least one letter and one digit; the message says exactly what is missing. */
export function checkPasswordPolicy(password: string): void {
  const problems: string[] = [];
  if (password.length < PASSWORD_MIN) problems.push(`at least ${PASSWORD_MIN} characters`);
  if (password.length > PASSWORD_MAX) problems.push(`at most ${PASSWORD_MAX} characters`);
  if (!/[A-Za-z]/.test(password)) problems.push("a letter");
  if (!/[0-9]/.test(password)) problems.push("a digit");
  if (problems.length > 0) {
    throw new AppError("validation_error", `password needs ${problems.join(", ")}`, [
      { path: ["password"], message: `needs ${problems.join(", ")}` },
    ]);
  }
}

export class PasswordHasher {
  private readonly pool: Piscina;

  constructor(threads: number) {
    this.pool = new Piscina({
      filename: fileURLToPath(new URL("./scrypt-worker.mjs", import.meta.url)),
      minThreads: 1,
      maxThreads: threads,
      idleTimeout: 30_000,
    });
  }

  hash(password: string): Promise<string> {
    return this.pool.run({ op: "hash", password });
  }

  verify(password: string, stored: string): Promise<boolean> {
    return this.pool.run({ op: "verify", password, stored });
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }
}
