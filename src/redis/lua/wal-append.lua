-- Appends one entry to each of several WAL streams, for a ledger owner that still holds its lease.
-- KEYS[1]      the ledger lease ("<fencing token>:<owner id>", with a TTL)
-- KEYS[2..n]   the WAL streams, one entry each
-- ARGV[1]      the lease value the writer holds; any other value (a newer owner, or none: the lease
--              expired) refuses the whole append with a FENCED error, so a stalled process that
--              lost its lease can never acknowledge anything
-- ARGV[2]      the WAL format version, stored in each entry's field "v"
-- ARGV[3..]    the entries' event payloads (field "e"), in the order of KEYS[2..]
-- Returns, per stream, {1, entry id} or {0, error}: pcall keeps one refused stream (say, a key of
-- the wrong type) from failing the others, exactly as separate commands in a pipeline would.
local lease = redis.call('GET', KEYS[1])
if lease ~= ARGV[1] then
  return redis.error_reply('FENCED the ledger lease is held by ' .. tostring(lease) .. ', not ' .. ARGV[1])
end
local fence = string.match(ARGV[1], '^(%d+):')
local out = {}
for i = 2, #KEYS do
  local r = redis.pcall('XADD', KEYS[i], '*', 'v', ARGV[2], 'f', fence, 'e', ARGV[i + 1])
  if type(r) == 'table' and r.err then out[i - 1] = {0, r.err} else out[i - 1] = {1, r} end
end
return out
