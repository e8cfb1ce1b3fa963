// Owns CORS: which origins may call the API from a browser, and answers to preflights.
export interface CorsPolicy {
  /** Headers to add to a response for this request's Origin (none if not allowed). */
  headersFor(origin: string | undefined): Array<[string, string]>;
  allowed(origin: string | undefined): boolean;
  preflightHeaders(origin: string): Array<[string, string]>;
}

const ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS";
const ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key";

export function corsPolicy(setting: string): CorsPolicy {
  const any = setting.trim() === "*";
  const origins = new Set(
    setting
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean),
  );
  const allowed = (origin: string | undefined) => origin !== undefined && (any || origins.has(origin));
  return {
    allowed,
    headersFor(origin) {
      if (!allowed(origin)) return [];
      return any
        ? [
            ["Access-Control-Allow-Origin", "*"],
            ["Access-Control-Expose-Headers", "Idempotency-Key"],
          ]
        : [
            ["Access-Control-Allow-Origin", origin!],
            ["Vary", "Origin"],
            ["Access-Control-Expose-Headers", "Idempotency-Key"],
          ];
    },
    preflightHeaders(origin) {
      return [
        ...this.headersFor(origin),
        ["Access-Control-Allow-Methods", ALLOW_METHODS],
        ["Access-Control-Allow-Headers", ALLOW_HEADERS],
        ["Access-Control-Max-Age", "600"],
      ];
    },
  };
}
