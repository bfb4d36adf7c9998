-- Grant credits to an account exactly once per key: the issuance account
-- (the only one that may go negative) pays, the account receives, and the
-- entry is appended. A repeat with the same key returns the stored entry.
-- A grant that would take the credits ever issued past the limit is
-- refused here, inside the script, so that concurrent grants cannot pass it
-- together; nothing moves then. A grant appends its credits.granted event
-- (the account, the credits, the grant key, the entry); a repeat or a
-- refusal appends none.
--
-- Amounts stay decimal strings from ARGV to Redis and into the history
-- line: Lua numbers are doubles, tostring() and cjson print them with
-- "%.14g" (1e+14, 1.2345678901234e+14), which Go cannot read as an integer
-- and which loses digits. Numbers are used only for the limit check, where
-- everything stays below 2^53 (exact).
--
-- KEYS[1] grant hash (by idempotency key)   KEYS[2] balances hash
-- KEYS[3] entries stream                      KEYS[4] account's history list
-- KEYS[5] issuance's history list              KEYS[6] events stream
-- ARGV[1] account   ARGV[2] credits (1 to 16 digits, no sign or leading 0)
-- ARGV[3] issuance account   ARGV[4] time (RFC 3339)   ARGV[5] grant key
-- ARGV[6] most credits that may ever be issued (ledger.IssuanceMax)
-- ARGV[7] the events stream's length to keep (XADD MAXLEN ~)
-- ARGV[8] the oldest event ID to keep (XTRIM MINID ~; "0": no age limit)
--
-- Returns one of:
--   {"granted", entry id, account's balance (decimal string)}
--   {"conflict", stored params}          (same key, other parameters)
--   {"issuance_limit", issuance's balance (decimal string)}
--   {"invalid", detail}                  (ARGV[2] is not a canonical amount)
local amount = ARGV[2]
if not string.match(amount, '^[1-9]%d*$') or #amount > 16 then
  return {'invalid', 'credits ' .. string.format('%q', amount) .. ' is not a whole number from 1 to 16 digits'}
end
local params = ARGV[1] .. '|' .. amount
local stored = redis.call('HGET', KEYS[1], 'params')
if stored then
  if stored ~= params then
    return {'conflict', stored}
  end
  return {'granted', redis.call('HGET', KEYS[1], 'entry_id'), redis.call('HGET', KEYS[2], ARGV[1]) or '0'}
end
local issuance = redis.call('HGET', KEYS[2], ARGV[3]) or '0'
-- Every other balance is at most what was issued (none is negative and all
-- sum to zero), so this one bound keeps all of them exact.
if -tonumber(issuance) + tonumber(amount) > tonumber(ARGV[6]) then
  return {'issuance_limit', issuance}
end
redis.call('HINCRBY', KEYS[2], ARGV[3], '-' .. amount)
redis.call('HINCRBY', KEYS[2], ARGV[1], amount)
local entry = redis.call('XADD', KEYS[3], '*', 'kind', 'grant', 'debit', ARGV[3], 'credit', ARGV[1],
  'amount', amount, 'grant_key', ARGV[5], 'at', ARGV[4])
-- cjson encodes the strings; the amount, checked above, goes in as written.
local line = '{"amount":' .. amount .. ',' .. string.sub(cjson.encode({id = entry, kind = 'grant',
  debit = ARGV[3], credit = ARGV[1], grant_key = ARGV[5], at = ARGV[4]}), 2)
redis.call('LPUSH', KEYS[4], line)
redis.call('LPUSH', KEYS[5], line)
redis.call('HSET', KEYS[1], 'params', params, 'entry_id', entry)
local data = '{"credits":' .. amount .. ',' .. string.sub(cjson.encode({account = ARGV[1],
  grant_key = ARGV[5], entry_id = entry}), 2)
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[7], '*',
  'type', 'credits.granted', 'time', ARGV[4], 'data', data, 'accounts', ARGV[1])
if ARGV[8] ~= '0' then
  redis.call('XTRIM', KEYS[6], 'MINID', '~', ARGV[8])
end
return {'granted', entry, redis.call('HGET', KEYS[2], ARGV[1])}
