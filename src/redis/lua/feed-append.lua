--[[
  Appends entries to creators' tip feed streams in one call, in order (a single Redis: on a Redis
  Cluster the streams sit in different slots, and each entry is its own XADD).

  Input:
    KEYS[1..n]      entry i's feed stream (a creator's; repeated for several entries of one creator)
    ARGV[1]         the streams' retention (XADD MAXLEN ~)
    ARGV[2i], ARGV[2i+1]  entry i's id ("<seq>-1") and its tip JSON (field "t")

  Output: per entry, 1 when it is in the stream now (this call wrote it, or an earlier one did:
  Redis refuses an id at or below the top), or the error text when Redis refused it otherwise.
  pcall keeps one refused entry from failing the others, as separate commands would.
]]
local out = {}
for i = 1, #KEYS do
  local r = redis.pcall('XADD', KEYS[i], 'MAXLEN', '~', ARGV[1], ARGV[2 * i], 't', ARGV[2 * i + 1])
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'equal or smaller', 1, true) then out[i] = 1 else out[i] = r.err end
  else
    out[i] = 1
  end
end
return out
