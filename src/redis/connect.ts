// Owns opening Redis connections: one Redis (REDIS_URL), or a Redis Cluster through ioredis'
// Cluster client when REDIS_CLUSTER_NODES is set. On a cluster every command is routed by its
// key's slot, so a script or a pipeline must keep to keys of one slot: the keys that one script
// touches together share a hash tag (src/redis/keys.ts), and commands over keys of many slots go
// through execSpread.
import { Cluster, Redis, type RedisOptions } from "ioredis";

/** A connection to one Redis or to a Redis Cluster; both speak the same commands. */
export type RedisClient = Redis | Cluster;

/** Where the WAL, streams and queues live: one Redis, or the seed nodes of a cluster. */
export interface RedisTarget {
  url: string;
  /** host:port of some cluster nodes; the client discovers the rest (null: a single Redis). */
  clusterNodes: string[] | null;
}

/** REDIS_CLUSTER_NODES ("host:port,host:port") parsed; null when unset or empty. */
export function parseClusterNodes(value: string | undefined): string[] | null {
  const nodes = (value ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  return nodes.length > 0 ? nodes : null;
}

export function redisTarget(config: {
  REDIS_URL: string;
  REDIS_CLUSTER_NODES?: string | undefined;
}): RedisTarget {
  return { url: config.REDIS_URL, clusterNodes: parseClusterNodes(config.REDIS_CLUSTER_NODES) };
}

/**
 * Opens a client for `target` with per-connection `options`. A cluster client pipelines on its
 * own per node (enableAutoPipelining), which is what a pipeline over one Redis does by hand.
 */
export function openRedis(target: RedisTarget, options: RedisOptions = {}): RedisClient {
  if (target.clusterNodes === null) return new Redis(target.url, options);
  const { lazyConnect, enableAutoPipelining: _ignored, ...redisOptions } = options;
  const auth = new URL(target.url);
  return new Cluster(
    target.clusterNodes.map((n) => {
      const i = n.lastIndexOf(":");
      return { host: n.slice(0, i), port: Number(n.slice(i + 1)) };
    }),
    {
      ...(lazyConnect !== undefined ? { lazyConnect } : {}),
      enableAutoPipelining: true,
      // Its own list (scripts.ts adds the variadic scripts): ioredis' default array is shared.
      autoPipeliningIgnoredCommands: [],
      // Commands wait for the slot map after a failover instead of failing at once.
      enableOfflineQueue: options.enableOfflineQueue ?? true,
      redisOptions: {
        ...redisOptions,
        ...(auth.password ? { password: decodeURIComponent(auth.password) } : {}),
        ...(auth.username ? { username: decodeURIComponent(auth.username) } : {}),
      },
    },
  );
}

export const isCluster = (redis: RedisClient): redis is Cluster => redis instanceof Cluster;

/** One command as ioredis' pipeline takes it: name, then arguments. */
export type SpreadCommand = [string, ...Array<string | number | Buffer>];

/**
 * Runs commands whose keys may lie in different cluster slots, each answered as [error, reply]
 * like a pipeline's exec: one pipeline on a single Redis; on a cluster each command is routed to
 * its node (and pipelined there with its neighbours), since one pipeline must keep to one node.
 * Commands on the same key keep their order on either.
 */
export async function execSpread(
  redis: RedisClient,
  commands: SpreadCommand[],
): Promise<Array<[Error | null, unknown]>> {
  if (commands.length === 0) return [];
  if (!isCluster(redis))
    return ((await redis.pipeline(commands).exec()) ?? []) as Array<[Error | null, unknown]>;
  return Promise.all(
    commands.map(([name, ...args]) =>
      redis.call(name, ...args).then(
        (reply): [Error | null, unknown] => [null, reply],
        (err: Error): [Error | null, unknown] => [err, null],
      ),
    ),
  );
}

/** A second connection like `redis` (its own socket, for a blocking read), with `override`. */
export function duplicateRedis(redis: RedisClient, override: RedisOptions = {}): RedisClient {
  if (!isCluster(redis)) return redis.duplicate(override);
  return redis.duplicate(undefined, {
    redisOptions: { ...redis.options.redisOptions, ...override },
  });
}
