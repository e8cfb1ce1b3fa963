// Owns what a US bank account must look like before it reaches a provider: a routing number of 9
// digits whose ABA checksum holds, and an account number of 4 to 17 digits. Pure.

/** ABA checksum: 3*(d1+d4+d7) + 7*(d2+d5+d8) + (d3+d6+d9) is a multiple of 10. */
export function isAbaRoutingNumber(s: string): boolean {
  if (!/^\d{9}$/.test(s)) return false;
  const d = [...s].map(Number);
  const sum = 3 * (d[0]! + d[3]! + d[6]!) + 7 * (d[1]! + d[4]! + d[7]!) + (d[2]! + d[5]! + d[8]!);
  return sum % 10 === 0;
}

export const isUsAccountNumber = (s: string): boolean => /^\d{4,17}$/.test(s);

/** The last four digits: all that is ever stored, answered or logged of an account number. */
export const last4 = (accountNumber: string): string => accountNumber.slice(-4);
