--[[
  Spends requests from each of several rate-limit counters: a fixed window per counter, opened
  by the first INCRBY (PEXPIRE sets the window's end).

  Input:
    KEYS[1..n]    the counters, each once (variadic: n is given per call)
    ARGV[1]       the window length in ms
    ARGV[2i]      the budget of KEYS[i]: requests allowed in one window
    ARGV[2i + 1]  how many requests of KEYS[i] this call spends (the checks of one turn that share
                  a key: the caller answers the first ones that fit and refuses the rest)

  Output: per key, {count in this window after this call, ms until the window ends}; the second
  only when the count is over budget, else 0. A counter found without a TTL gets a fresh window.
]]
local out = {}
for i = 1, #KEYS do
  local spent = tonumber(ARGV[2 * i + 1])
  local n = redis.call('INCRBY', KEYS[i], spent)
  if n == spent then redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
  local wait = 0
  if n > tonumber(ARGV[2 * i]) then
    wait = redis.call('PTTL', KEYS[i])
    if wait < 0 then redis.call('PEXPIRE', KEYS[i], ARGV[1]); wait = tonumber(ARGV[1]) end
  end
  out[i] = {n, wait}
end
return out
