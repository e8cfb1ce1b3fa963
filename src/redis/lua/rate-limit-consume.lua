--[[
  Spends one request from each of several rate-limit counters: a fixed window per counter,
  opened by the first INCR (PEXPIRE sets the window's end).

  Input:
    KEYS[1..n]  the counters, one per check (variadic: n is given per call)
    ARGV[1]     the window length in ms
    ARGV[i + 1] the budget of KEYS[i]: requests allowed in one window

  Output: per key, {count in this window, ms until the window ends}; the second only when the
  count is over budget, else 0. A counter found without a TTL gets a fresh window.
]]
local out = {}
for i = 1, #KEYS do
  local n = redis.call('INCR', KEYS[i])
  if n == 1 then redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
  local wait = 0
  if n > tonumber(ARGV[i + 1]) then
    wait = redis.call('PTTL', KEYS[i])
    if wait < 0 then redis.call('PEXPIRE', KEYS[i], ARGV[1]); wait = tonumber(ARGV[1]) end
  end
  out[i] = {n, wait}
end
return out
