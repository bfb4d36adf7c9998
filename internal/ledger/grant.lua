-- Grant credits to an account exactly once per key: the issuance account
-- (the only one that may go negative) pays, the account receives, and the
-- entry is appended. A repeat with the same key returns the stored entry.
--
-- KEYS[1] grant hash (by idempotency key)   KEYS[2] balances hash
-- KEYS[3] entries stream                      KEYS[4] account's history list
-- KEYS[5] issuance's history list
-- ARGV[1] account   ARGV[2] credits   ARGV[3] issuance account
-- ARGV[4] time (RFC 3339)   ARGV[5] grant key
--
-- Returns {"granted", entry id, balance after} or {"conflict", stored params}.
local params = ARGV[1] .. '|' .. ARGV[2]
local stored = redis.call('HGET', KEYS[1], 'params')
if stored then
  if stored ~= params then
    return {'conflict', stored}
  end
  return {'granted', redis.call('HGET', KEYS[1], 'entry_id'), redis.call('HGET', KEYS[2], ARGV[1]) or '0'}
end
local credits = tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[3], -credits)
local balance = redis.call('HINCRBY', KEYS[2], ARGV[1], credits)
local entry = redis.call('XADD', KEYS[3], '*', 'kind', 'grant', 'debit', ARGV[3], 'credit', ARGV[1],
  'amount', ARGV[2], 'grant_key', ARGV[5], 'at', ARGV[4])
local line = cjson.encode({id = entry, kind = 'grant', debit = ARGV[3], credit = ARGV[1],
  amount = credits, grant_key = ARGV[5], at = ARGV[4]})
redis.call('LPUSH', KEYS[4], line)
redis.call('LPUSH', KEYS[5], line)
redis.call('HSET', KEYS[1], 'params', params, 'entry_id', entry)
return {'granted', entry, tostring(balance)}
