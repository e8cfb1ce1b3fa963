// Owns loading the Lua scripts in ./lua into an ioredis client. Each file's header names its
// KEYS and ARGV; the number in the file name is its key count (-1: variadic, given per call),
// as in BullMQ's src/commands/*.lua. defineCommand sends EVALSHA and falls back to EVAL once if
// Redis lost the script.
import { readFileSync } from "node:fs";
import { isCluster, type RedisClient } from "./connect.ts";

const cache = new Map<string, string>();

function source(file: string): string {
  let lua = cache.get(file);
  if (lua === undefined) {
    lua = readFileSync(new URL(`./lua/${file}`, import.meta.url), "utf8");
    cache.set(file, lua);
  }
  return lua;
}

/** Defines `name` on the client from lua/<file>, once per client. */
export function defineScript(redis: RedisClient, name: string, file: string): void {
  if (name in redis) return;
  const m = /-(\d+)\.lua$/.exec(file);
  const numberOfKeys = m ? Number(m[1]) : undefined;
  // A variadic script's first argument is its key count, which a cluster client's auto-pipeline
  // would take for the key to route by: such calls go out on their own, routed by their keys.
  if (numberOfKeys === undefined && isCluster(redis)) redis.options.autoPipeliningIgnoredCommands?.push(name);
  redis.defineCommand(
    name,
    numberOfKeys === undefined ? { lua: source(file) } : { lua: source(file), numberOfKeys },
  );
}
