// Admin command line: `npm run admin -- grant <email>` makes a registered user an admin (the role
// lives in our users table, never in tokens); `revoke <email>` makes them a viewer again.
import { loadConfig } from "../config.ts";
import { createPool } from "../db/pool.ts";
import { UserStore } from "../users/user-store.ts";

const USAGE = "usage: npm run admin -- grant <email> | revoke <email>";

export async function runAdminCli(
  argv: string[],
  databaseUrl: string,
): Promise<{ code: number; out: string }> {
  const [cmd, email] = argv;
  if ((cmd !== "grant" && cmd !== "revoke") || !email) return { code: 2, out: USAGE };
  const pool = createPool(databaseUrl, 1);
  try {
    const user = await new UserStore(pool).setRoleByEmail(email, cmd === "grant" ? "admin" : "viewer");
    if (!user) return { code: 1, out: `no user with email ${email}` };
    return { code: 0, out: `${user.email} (${user.id}) is now ${user.role}` };
  } finally {
    await pool.end();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await runAdminCli(process.argv.slice(2), loadConfig().DATABASE_URL);
  (r.code === 0 ? console.log : console.error)(r.out);
  process.exit(r.code);
}
