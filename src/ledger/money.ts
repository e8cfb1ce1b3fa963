// Owns conversions between the API's dollars and the ledger's integer cents. Inside the system
// money is only ever whole cents; floats never take part in arithmetic.

/** Dollars as given by a client (number or decimal string) to cents; null if not whole cents. */
export function dollarsToCents(dollars: number | string): number | null {
  const s = typeof dollars === "number" ? numberToPlainString(dollars) : dollars.trim();
  const m = /^(\d{1,13})(?:\.(\d{1,2}))?$/.exec(s);
  if (!m) return null;
  const cents = Number(m[1]) * 100 + Number((m[2] ?? "").padEnd(2, "0"));
  return Number.isSafeInteger(cents) ? cents : null;
}

function numberToPlainString(n: number): string {
  if (!Number.isFinite(n)) return "x";
  // Shortest round-trip form: 1.1 -> "1.1", 1.005 -> "1.005" (rejected: not whole cents).
  const s = String(n);
  return s.includes("e") ? "x" : s;
}

/** Cents to the API's decimal string: 1234 -> "12.34", -5 -> "-0.05". */
export function centsToDollars(cents: number): string {
  const sign = cents < 0 ? "-" : "";
  const abs = Math.abs(cents);
  return `${sign}${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, "0")}`;
}
