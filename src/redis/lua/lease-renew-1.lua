-- Extends the lease if this process still holds it.
-- KEYS[1]  the lease
-- ARGV[1]  the lease value this process holds
-- ARGV[2]  the lease lifetime in ms
-- Returns 1 if renewed, 0 if the lease is gone or another process holds it.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
