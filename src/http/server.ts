// Owns the HTTP server as a library: the uWS app (native build only), API routes registered
// behind the shared pipeline (router.ts), the preflight and 404 fallbacks, listening and closing.
// It knows no feature: the composition root (src/main/http-app.ts) hands it the routes.
import type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket } from "uWebSockets.js";
import { nativeUws } from "./native.ts";
import {
  type Endpoint,
  endpointOf,
  type RouteDef,
  type RouterDeps,
  registerFallbacks,
  registerRoute,
} from "./router.ts";

export interface HttpApp {
  /** The uWS app, for endpoints outside the API pipeline (health.ts). */
  readonly app: TemplatedApp;
  /** Registers API routes behind the shared pipeline; only before listen. */
  register(routes: readonly RouteDef[]): void;
  /** Registers a GET endpoint outside the API pipeline (health, metrics); only before listen. */
  get(path: string, handler: (res: HttpResponse, req: HttpRequest) => void): void;
  /** Registers a POST endpoint outside the API pipeline (the processes' internal calls). */
  post(path: string, handler: (res: HttpResponse, req: HttpRequest) => void): void;
  /** Every endpoint registered so far, API routes and the others, in registration order. */
  readonly endpoints: readonly Endpoint[];
  /** Adds the fallbacks after every route, then listens; port 0 picks a free one. Resolves to the port. */
  listen(port: number, host?: string): Promise<number>;
  /** Stops accepting connections. */
  close(): void;
}

export function createHttpApp(deps: RouterDeps): HttpApp {
  const uws = nativeUws();
  const app = uws.App();
  let token: us_listen_socket | null = null;
  let sealed = false;
  const endpoints: Endpoint[] = [];
  const unsealed = () => {
    if (sealed) throw new Error("routes must be registered before the server listens");
  };
  return {
    app,
    endpoints,
    register(routes) {
      unsealed();
      for (const r of routes) {
        registerRoute(app, r, deps);
        endpoints.push(endpointOf(r));
      }
    },
    get(path, handler) {
      unsealed();
      app.get(path, handler);
      endpoints.push({ method: "get", path, auth: "none", body: "none", pipeline: false });
    },
    post(path, handler) {
      unsealed();
      app.post(path, handler);
      endpoints.push({ method: "post", path, auth: "none", body: "json", pipeline: false });
    },
    listen(port, host = "0.0.0.0") {
      if (!sealed) {
        sealed = true;
        registerFallbacks(app, deps);
      }
      return new Promise((resolve, reject) => {
        app.listen(host, port, (t) => {
          if (!t) return reject(new Error(`cannot listen on ${host}:${port}`));
          token = t;
          resolve(uws.us_socket_local_port(t as never));
        });
      });
    },
    close() {
      if (token) uws.us_listen_socket_close(token);
      token = null;
    },
  };
}
