// A local stand-in for the two Supabase Auth (GoTrue) endpoints our server uses: the admin
// create-user endpoint that @supabase/supabase-js calls on registration, and the project's JWKS
// that verifies Supabase-issued asymmetric tokens. It speaks GoTrue's wire format: the user
// object as the body, errors as {code, error_code, msg} with GoTrue's status codes.
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT } from "jose";

export interface GoTrueStandin {
  url: string;
  serviceKey: string;
  /** Every create-user call as received (headers and parsed body). */
  calls: Array<{
    apikey: string | undefined;
    authorization: string | undefined;
    body: Record<string, unknown>;
  }>;
  /** An access token as Supabase would issue it for `userId`, signed ES256 with the JWKS key. */
  issueToken(userId: string, email: string, expiresInS?: number): Promise<string>;
  close(): Promise<void>;
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}");
}

export async function startGoTrueStandin(): Promise<GoTrueStandin> {
  const serviceKey = `service-role-${randomUUID()}`;
  const { publicKey, privateKey } = await generateKeyPair("ES256");
  const kid = randomUUID();
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" };
  const byEmail = new Map<string, { id: string }>();
  const calls: GoTrueStandin["calls"] = [];

  const server = createServer(async (req, res) => {
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (req.method === "GET" && req.url === "/auth/v1/.well-known/jwks.json") {
      return send(200, { keys: [jwk] });
    }
    if (req.method === "POST" && req.url === "/auth/v1/admin/users") {
      const body = await readJson(req);
      calls.push({ apikey: req.headers.apikey as string, authorization: req.headers.authorization, body });
      if (req.headers.authorization !== `Bearer ${serviceKey}`) {
        return send(401, { code: 401, error_code: "no_authorization", msg: "Invalid JWT" });
      }
      const email = String(body.email ?? "").toLowerCase();
      if (byEmail.has(email)) {
        return send(422, {
          code: 422,
          error_code: "email_exists",
          msg: "A user with this email address has already been registered",
        });
      }
      const now = new Date().toISOString();
      const user = {
        id: randomUUID(),
        aud: "authenticated",
        role: "authenticated",
        email,
        email_confirmed_at: body.email_confirm ? now : null,
        app_metadata: { provider: "email", providers: ["email"] },
        user_metadata: body.user_metadata ?? {},
        identities: [],
        created_at: now,
        updated_at: now,
        is_anonymous: false,
      };
      byEmail.set(email, user);
      return send(200, user);
    }
    send(404, { code: 404, error_code: "not_found", msg: "Not Found" });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    serviceKey,
    calls,
    issueToken(userId, email, expiresInS = 3600) {
      return new SignJWT({ email, role: "authenticated", aal: "aal1", session_id: randomUUID() })
        .setProtectedHeader({ alg: "ES256", kid, typ: "JWT" })
        .setSubject(userId)
        .setAudience("authenticated")
        .setIssuer(`http://127.0.0.1:${port}/auth/v1`)
        .setIssuedAt()
        .setExpirationTime(`${expiresInS}s`)
        .sign(privateKey);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
