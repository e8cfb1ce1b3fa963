-- Gives the lease up if this process still holds it (never another's).
-- KEYS[1]  the lease
-- ARGV[1]  the lease value this process holds
-- Returns 1 if released, 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
