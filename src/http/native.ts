// Owns loading uWebSockets.js. The package we install silently falls back to a slow pure-JS
// server when its native binary does not load; only the native build has SSLApp/H3App, so their
// absence means the fallback, and the server refuses to start on it.
import uws from "uWebSockets.js";

export function nativeUws(): typeof uws {
  const mod = uws as unknown as Record<string, unknown>;
  if (typeof mod.SSLApp !== "function" || typeof mod.H3App !== "function" || process.env.UWS_USE_FALLBACK) {
    throw new Error(
      "uWebSockets.js loaded its pure-JS fallback, not the native binary (needs Node 20 on glibc >= 2.36); refusing to start",
    );
  }
  return uws;
}
