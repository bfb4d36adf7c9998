-- Apply a purchase exactly once: check the asset, the price, the owner and
-- the buyer's balance; then debit the buyer, credit the seller, hand the
-- asset to the buyer, append the entry and store the result. A rejection is
-- stored too and moves nothing. Repeats return the stored result.
--
-- Amounts and balances stay decimal strings wherever they are written or
-- shown: Lua numbers are doubles that tostring(), '..' and cjson print with
-- "%.14g" (1.2345678901234e+14: digits lost). Numbers are used only to
-- compare, and every balance is at most the credits ever issued, which the
-- grant script keeps below 2^53 (exact); so a purchase needs no limit
-- check of its own: it only moves credits that exist.
--
-- KEYS[1] purchase hash          KEYS[2] asset record hash
-- KEYS[3] balances hash          KEYS[4] entries stream
-- KEYS[5] buyer's history list   KEYS[6] expected seller's history list
-- KEYS[7] set of purchase IDs
-- ARGV[1] purchase id   ARGV[2] asset id   ARGV[3] buyer
-- ARGV[4] credits (1 to 16 digits, no sign or leading 0)
-- ARGV[5] expected seller (read before the call)   ARGV[6] house account
-- ARGV[7] time (RFC 3339)
--
-- Returns {status, a, b}:
--   {"succeeded", entry id, seller}    {"rejected", reason, detail}
--   {"conflict", stored params}         (same id, other parameters)
--   {"stale", actual seller}            (the seller changed: read it and call again)
--   {"invalid", detail}                 (ARGV[4] is not a canonical amount; nothing stored)
local pid, aid, buyer, amount = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if not string.match(amount, '^[1-9]%d*$') or #amount > 16 then
  return {'invalid', 'credits ' .. string.format('%q', amount) .. ' is not a whole number from 1 to 16 digits'}
end
local credits = tonumber(amount)
local params = aid .. '|' .. buyer .. '|' .. amount

local status = redis.call('HGET', KEYS[1], 'status')
if status then
  local stored = redis.call('HGET', KEYS[1], 'params')
  if stored ~= params then
    return {'conflict', stored}
  end
  if status == 'succeeded' then
    return {'succeeded', redis.call('HGET', KEYS[1], 'entry_id'), redis.call('HGET', KEYS[1], 'seller')}
  end
  if status == 'rejected' then
    return {'rejected', redis.call('HGET', KEYS[1], 'reason'), redis.call('HGET', KEYS[1], 'detail')}
  end
  -- 'pending': accepted by the API, not applied yet; apply it now.
end

local function reject(reason, detail)
  redis.call('HSET', KEYS[1], 'status', 'rejected', 'reason', reason, 'detail', detail,
    'params', params, 'asset_id', aid, 'buyer', buyer, 'credits', amount, 'updated_at', ARGV[7])
  redis.call('SADD', KEYS[7], pid)
  return {'rejected', reason, detail}
end

if redis.call('EXISTS', KEYS[2]) == 0 then
  return reject('unknown_asset', 'no asset ' .. aid)
end
local owner = redis.call('HGET', KEYS[2], 'owner') or ''
local seller = owner
if seller == '' then
  seller = redis.call('HGET', KEYS[2], 'uploader') or ''
end
if seller == '' then
  seller = ARGV[6]
end
if seller ~= ARGV[5] then
  return {'stale', seller}
end
if owner == buyer or seller == buyer then
  return reject('already_owner', buyer .. ' owns ' .. aid .. ' already')
end
local price = redis.call('HGET', KEYS[2], 'price') or ''
if price ~= '' and tonumber(price) ~= credits then
  return reject('wrong_price', 'the price of ' .. aid .. ' is ' .. price .. ' credits, the purchase offers ' .. amount)
end
local balance = redis.call('HGET', KEYS[3], buyer) or '0'
if tonumber(balance) < credits then
  return reject('insufficient_credits', buyer .. ' has ' .. balance .. ' credits, the purchase needs ' .. amount)
end

redis.call('HINCRBY', KEYS[3], buyer, '-' .. amount)
redis.call('HINCRBY', KEYS[3], seller, amount)
redis.call('HSET', KEYS[2], 'owner', buyer)
local entry = redis.call('XADD', KEYS[4], '*', 'kind', 'purchase', 'debit', buyer, 'credit', seller,
  'amount', amount, 'purchase_id', pid, 'asset_id', aid, 'at', ARGV[7])
-- cjson encodes the strings; the amount, checked above, goes in as written.
local line = '{"amount":' .. amount .. ',' .. string.sub(cjson.encode({id = entry, kind = 'purchase',
  debit = buyer, credit = seller, purchase_id = pid, asset_id = aid, at = ARGV[7]}), 2)
redis.call('LPUSH', KEYS[5], line)
redis.call('LPUSH', KEYS[6], line)
redis.call('HSET', KEYS[1], 'status', 'succeeded', 'entry_id', entry, 'seller', seller,
  'params', params, 'asset_id', aid, 'buyer', buyer, 'credits', amount, 'updated_at', ARGV[7])
redis.call('SADD', KEYS[7], pid)
return {'succeeded', entry, seller}
