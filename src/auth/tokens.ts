// Owns access tokens: Supabase-shaped JWTs (sub, email, role "authenticated", aud
// "authenticated", exp) signed HS256 with SUPABASE_JWT_SECRET, or Supabase's own tokens checked
// against the project's JWKS. Verified tokens are cached (bounded, until they expire), because
// verifying an HMAC on every tip is measurable at thousands of tips a second.
import { createRemoteJWKSet, type JWTPayload, jwtVerify, SignJWT } from "jose";
import { AppError } from "../errors.ts";
import { isUuid } from "../ledger/accounts.ts";

export interface TokenClaims {
  sub: string;
  email: string;
  exp: number;
}

export interface TokenServiceOptions {
  secret: string;
  expiresInS: number;
  /** Supabase project URL: tokens signed with its asymmetric keys are checked against its JWKS. */
  supabaseUrl?: string;
  cacheMax?: number;
}

export class TokenService {
  /**
   * The HMAC key imported into WebCrypto once: handing jose raw bytes makes it import them on
   * every call, which doubled the cost of a verification (43 -> 20 us measured).
   */
  private readonly key: Promise<CryptoKey>;
  private readonly jwks: ReturnType<typeof createRemoteJWKSet> | null;
  private readonly cache = new Map<string, TokenClaims>();
  private readonly cacheMax: number;

  constructor(private readonly o: TokenServiceOptions) {
    this.key = crypto.subtle.importKey(
      "raw",
      new TextEncoder().encode(o.secret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign", "verify"],
    );
    this.jwks = o.supabaseUrl
      ? createRemoteJWKSet(new URL("/auth/v1/.well-known/jwks.json", o.supabaseUrl))
      : null;
    this.cacheMax = o.cacheMax ?? 200_000;
  }

  async issue(user: {
    id: string;
    email: string;
  }): Promise<{ access_token: string; token_type: "bearer"; expires_in: number }> {
    const token = await new SignJWT({ email: user.email, role: "authenticated" })
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject(user.id)
      .setAudience("authenticated")
      .setIssuedAt()
      .setExpirationTime(`${this.o.expiresInS}s`)
      .sign(await this.key);
    return { access_token: token, token_type: "bearer", expires_in: this.o.expiresInS };
  }

  /** The claims of a token verified before and not expired since, or null: no I/O, no crypto. */
  cachedClaims(token: string): TokenClaims | null {
    const hit = this.cache.get(token);
    if (!hit) return null;
    if (hit.exp > Math.floor(Date.now() / 1000)) return hit;
    this.cache.delete(token);
    return null;
  }

  /** Verifies a bearer token; AppError unauthorized if it is missing, forged or expired. */
  async verify(token: string): Promise<TokenClaims> {
    const hit = this.cachedClaims(token);
    if (hit) return hit;
    let payload: JWTPayload;
    try {
      const header = JSON.parse(Buffer.from(token.split(".")[0] ?? "", "base64url").toString("utf8")) as {
        alg?: string;
      };
      if (header.alg === "HS256" || !this.jwks) {
        ({ payload } = await jwtVerify(token, await this.key, {
          algorithms: ["HS256"],
          audience: "authenticated",
        }));
      } else {
        ({ payload } = await jwtVerify(token, this.jwks, { audience: "authenticated" }));
      }
    } catch {
      throw new AppError("unauthorized", "the access token is invalid or expired");
    }
    // A user id is a UUID (Supabase's and ours): a signed token naming anything else (say
    // "__proto__") is refused here, not deep in a route where Postgres would reject the value.
    if (
      typeof payload.sub !== "string" ||
      !isUuid(payload.sub) ||
      typeof payload.exp !== "number" ||
      payload.role !== "authenticated"
    ) {
      throw new AppError("unauthorized", "the access token is not a user token");
    }
    const sub = payload.sub.toLowerCase();
    const claims: TokenClaims = { sub, email: String(payload.email ?? ""), exp: payload.exp };
    if (this.cacheMax === 0) return claims;
    if (this.cache.size >= this.cacheMax) {
      // Drop the oldest entry (Map keeps insertion order): a bounded cache, not an LRU, is enough here.
      const first = this.cache.keys().next();
      if (!first.done) this.cache.delete(first.value);
    }
    this.cache.set(token, claims);
    return claims;
  }
}

/** Development secret for `npm start` without SUPABASE_JWT_SECRET; production refuses to use it. */
export const DEV_JWT_SECRET = "3am-development-secret-do-not-use-in-production-0000";
