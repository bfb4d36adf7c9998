-- Apply a purchase exactly once, by the market rules: an asset nobody owns
-- is sold by the house (its uploader's account, else the house account) at
-- its price; an owned asset is for sale only while its owner lists it, at
-- the listing's credits; unpriced or unlisted is not for sale. The
-- purchase must name that amount exactly (0 is free and still a sale), the
-- buyer must not own the asset already and must have the credits. Then it
-- debits the buyer, credits the seller, hands the asset to the buyer, ends
-- the listing, appends the entry (to the entries stream, both accounts'
-- histories and the asset's sales list) and stores the result. A rejection
-- is stored too and moves nothing. Repeats return the stored result.
-- A purchase applied appends its purchase.succeeded event, a rejection its
-- purchase.rejected event (with the reason and detail); a repeat, a
-- conflict, a stale seller or an invalid amount appends none.
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
-- KEYS[7] set of purchase IDs    KEYS[8] the asset's sales list
-- KEYS[9] events stream
-- ARGV[1] purchase id   ARGV[2] asset id   ARGV[3] buyer
-- ARGV[4] credits ("0", or 1 to 16 digits with no sign or leading 0)
-- ARGV[5] expected seller (the caller's guess)   ARGV[6] house account
-- ARGV[7] time (RFC 3339)
-- ARGV[8] the events stream's length to keep (XADD MAXLEN ~)
-- ARGV[9] the oldest event ID to keep (XTRIM MINID ~; "0": no age limit)
--
-- Returns {status, a, b}:
--   {"succeeded", entry id, seller}    {"rejected", reason, detail}
--   {"conflict", stored params}         (same id, other parameters)
--   {"stale", actual seller}            (the guess was wrong: call again naming it)
--   {"invalid", detail}                 (ARGV[4] is not a canonical amount; nothing stored)
-- Reasons: unknown_asset, already_owner, not_for_sale, wrong_price,
-- insufficient_credits.
local pid, aid, buyer, amount = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if not (amount == '0' or string.match(amount, '^[1-9]%d*$')) or #amount > 16 then
  return {'invalid', 'credits ' .. string.format('%q', amount) .. ' is not a whole number of 0 or 1 to 16 digits'}
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

-- event appends one event; the amount, checked above, goes into the JSON
-- as written (cjson would print a number with "%.14g").
local function event(etype, fields, accounts)
  local data = '{"credits":' .. amount .. ',' .. string.sub(cjson.encode(fields), 2)
  redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[8], '*',
    'type', etype, 'time', ARGV[7], 'data', data, 'accounts', accounts)
  if ARGV[9] ~= '0' then
    redis.call('XTRIM', KEYS[9], 'MINID', '~', ARGV[9])
  end
end

local function reject(reason, detail)
  redis.call('HSET', KEYS[1], 'status', 'rejected', 'reason', reason, 'detail', detail,
    'params', params, 'asset_id', aid, 'buyer', buyer, 'credits', amount, 'updated_at', ARGV[7])
  redis.call('SADD', KEYS[7], pid)
  -- Only the buyer's: the detail may quote the buyer's balance.
  event('purchase.rejected', {purchase_id = pid, asset_id = aid, buyer = buyer, reason = reason, detail = detail}, buyer)
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
if owner == buyer then
  return reject('already_owner', buyer .. ' owns ' .. aid .. ' already')
end
if seller == buyer then
  return reject('already_owner', buyer .. ' sells ' .. aid .. ' (nobody owns it yet) and cannot buy it from itself')
end

-- What the asset is for sale at: an owned asset's listing, an unowned
-- asset's price; '' is not for sale.
local ask, what
if owner ~= '' then
  ask, what = redis.call('HGET', KEYS[2], 'listing') or '', 'listed at'
  if ask == '' then
    return reject('not_for_sale', aid .. ' is owned by ' .. owner .. ' and not listed: it is for sale only while its owner lists it (dab listing set ' .. aid .. ' N, or PUT /v1/assets/' .. aid .. '/listing)')
  end
else
  ask, what = redis.call('HGET', KEYS[2], 'price') or '', 'priced at'
  if ask == '' then
    return reject('not_for_sale', 'nobody owns ' .. aid .. ' and it has no price: the house sells it once an admin prices it (dab assets price ' .. aid .. ' N, or POST /v1/assets/' .. aid .. '/price)')
  end
end
if ask ~= amount then
  return reject('wrong_price', aid .. ' is ' .. what .. ' ' .. ask .. ' credits, the purchase offers ' .. amount)
end
local balance = redis.call('HGET', KEYS[3], buyer) or '0'
if tonumber(balance) < credits then
  return reject('insufficient_credits', buyer .. ' has ' .. balance .. ' credits, the purchase needs ' .. amount)
end

if credits > 0 then
  redis.call('HINCRBY', KEYS[3], buyer, '-' .. amount)
  redis.call('HINCRBY', KEYS[3], seller, amount)
end
redis.call('HSET', KEYS[2], 'owner', buyer)
-- A sale ends the listing: the new owner has not offered it.
redis.call('HDEL', KEYS[2], 'listing')
local entry = redis.call('XADD', KEYS[4], '*', 'kind', 'purchase', 'debit', buyer, 'credit', seller,
  'amount', amount, 'purchase_id', pid, 'asset_id', aid, 'at', ARGV[7])
-- cjson encodes the strings; the amount, checked above, goes in as written.
local line = '{"amount":' .. amount .. ',' .. string.sub(cjson.encode({id = entry, kind = 'purchase',
  debit = buyer, credit = seller, purchase_id = pid, asset_id = aid, at = ARGV[7]}), 2)
redis.call('LPUSH', KEYS[5], line)
redis.call('LPUSH', KEYS[6], line)
-- Oldest first: the asset's provenance, one line per sale.
redis.call('RPUSH', KEYS[8], line)
redis.call('HSET', KEYS[1], 'status', 'succeeded', 'entry_id', entry, 'seller', seller,
  'params', params, 'asset_id', aid, 'buyer', buyer, 'credits', amount, 'updated_at', ARGV[7])
redis.call('SADD', KEYS[7], pid)
event('purchase.succeeded', {purchase_id = pid, asset_id = aid, buyer = buyer, seller = seller, entry_id = entry},
  buyer .. ' ' .. seller)
return {'succeeded', entry, seller}
