// Owns telling "Postgres is not there right now" apart from a bug: refused or lost connections,
// timeouts and server shutdowns are passing conditions a client should retry (503), not 500s.
// Also tells text Postgres cannot store (a client's mistake, 400) apart from a bug.

/** SQLSTATEs of a database that is down, restarting, overloaded or too slow (class 08 too). */
const UNAVAILABLE_SQLSTATES = new Set([
  "57014", // statement timeout (statement_timeout)
  "57P01", // admin shutdown
  "57P02", // crash shutdown
  "57P03", // cannot connect now (starting up)
  "53300", // too many connections
  "55000", // the database is not accepting connections (ALLOW_CONNECTIONS false)
  "25P03", // idle-in-transaction timeout
]);
const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
]);
/** node-postgres' own messages for a connect timeout, a client-side query timeout, a lost socket. */
const CLIENT_MESSAGES =
  /timeout exceeded when trying to connect|Query read timeout|Connection terminated|Client has encountered a connection error/i;

/**
 * Text Postgres cannot store, whatever the column: a NUL (22021 in text, 22P05 as "\u0000" in
 * json/jsonb) and, in json/jsonb, an unpaired UTF-16 surrogate such as "\ud800" (22P02 with a
 * detail naming the surrogate). Only a client's text holds them (a signed webhook event did, in
 * an extra member); JSON bodies refuse NUL at the edge, this covers every other way in. Any other
 * 22P02 (invalid input syntax) means a value we should have validated: a bug to find, still a 500.
 */
export function isUnstorableText(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const { code, detail } = err as { code?: unknown; detail?: unknown };
  if (code === "22021" || code === "22P05") return true;
  return code === "22P02" && typeof detail === "string" && /surrogate/i.test(detail);
}

export function isDatabaseUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (
    typeof code === "string" &&
    (UNAVAILABLE_SQLSTATES.has(code) || code.startsWith("08") || NETWORK_CODES.has(code))
  ) {
    return true;
  }
  return CLIENT_MESSAGES.test(err.message);
}
