-- Appends entries to WAL streams, each for a shard whose lease the writer still holds.
-- KEYS         pairs: KEYS[2i-1] the lease of entry i's shard ("<fencing token>:<owner id>", with a
--              TTL), KEYS[2i] that shard's WAL stream. On a Redis Cluster one call carries one
--              shard's entries (its lease and stream share the hash tag {shard}).
-- ARGV[1]      the WAL format version, stored in each entry's field "v"
-- ARGV[2..n+1] per entry, the lease value the writer holds for its shard; any other value (a
--              newer owner, or none: the lease expired) refuses the whole append with a FENCED
--              error, so a stalled process that lost a lease can never acknowledge anything
-- ARGV[n+2..]  the entries' event payloads (field "e"), in the order of the pairs
-- Returns, per entry, {1, entry id} or {0, error}: pcall keeps one refused stream (say, a key of
-- the wrong type) from failing the others, exactly as separate commands in a pipeline would.
local n = #KEYS / 2
for i = 1, n do
  local lease = redis.call('GET', KEYS[2 * i - 1])
  if lease ~= ARGV[1 + i] then
    return redis.error_reply('FENCED the lease ' .. KEYS[2 * i - 1] .. ' is held by ' .. tostring(lease) .. ', not ' .. ARGV[1 + i])
  end
end
local out = {}
for i = 1, n do
  local fence = string.match(ARGV[1 + i], '^(%d+):')
  local r = redis.pcall('XADD', KEYS[2 * i], '*', 'v', ARGV[1], 'f', fence, 'e', ARGV[1 + n + i])
  if type(r) == 'table' and r.err then out[i] = {0, r.err} else out[i] = {1, r} end
end
return out
