-- Takes the ledger lease if nobody holds it, with a fencing token one above the last owner's.
-- KEYS[1]  the lease
-- KEYS[2]  the fencing-token counter (never deleted: tokens only grow)
-- ARGV[1]  this process's owner id
-- ARGV[2]  the lease lifetime in ms
-- Returns the lease value "<token>:<owner id>", or false while another process holds it.
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
local value = token .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
