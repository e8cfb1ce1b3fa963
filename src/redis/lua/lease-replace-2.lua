-- Replaces the ledger lease value with a new fencing token, only if the lease still holds exactly
-- the value the caller names. Two uses: a process rotating its own lease before it rebuilds its
-- memory (any append of its still in flight then lands before, or is refused after), and a
-- restart taking over from an owner proven dead (see src/wal/process-identity.ts). An owner that
-- renewed, or a third process that took the lease meanwhile, keeps it.
-- KEYS[1]  the lease
-- KEYS[2]  the fencing-token counter (never deleted: tokens only grow)
-- ARGV[1]  the lease value expected now
-- ARGV[2]  this process's owner id
-- ARGV[3]  the lease lifetime in ms
-- Returns the new lease value "<token>:<owner id>", or false if the lease holds another value.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local token = redis.call('INCR', KEYS[2])
local value = token .. ':' .. ARGV[2]
redis.call('SET', KEYS[1], value, 'PX', ARGV[3])
return value
