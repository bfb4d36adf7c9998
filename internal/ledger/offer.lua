-- Change what an asset is offered at: its price (what the house sells it
-- for while nobody owns it) or its listing (what its owner sells it for).
-- The market rules are checked here, atomically with the change, so that a
-- sale running at the same time cannot slip between the check and the
-- write: a listing needs an owner and, unless the caller acts for any owner
-- (admin), that owner must be the caller's account; a price is set only
-- while nobody owns the asset (clearing it is always allowed). A change is
-- appended to the entries stream (kind "listing" or "price"; it moves no
-- credits) and appends its event (listing.changed or price.changed); a
-- change to the value the asset already has writes nothing.
--
-- KEYS[1] asset record hash   KEYS[2] entries stream   KEYS[3] events stream
-- ARGV[1] field: "listing" or "price"
-- ARGV[2] asset id
-- ARGV[3] credits: "0", or 1 to 16 digits with no sign or leading 0, at
--         most ARGV[7]; "" clears the field
-- ARGV[4] listing only: the account the caller acts for, which must own the
--         asset; "*" for any owner (admin)
-- ARGV[5] who asks (for the entry: an account or a token's name)
-- ARGV[6] time (RFC 3339)
-- ARGV[7] the largest amount (ledger.CreditsMax)
-- ARGV[8] house account (the seller of an unowned asset without uploader)
-- ARGV[9] the events stream's length to keep (XADD MAXLEN ~)
-- ARGV[10] the oldest event ID to keep (XTRIM MINID ~; "0": no age limit)
--
-- Returns one of:
--   {"changed", entry id, seller}        {"unchanged", "", seller}
--   {"unknown_asset", detail}            {"not_owned", detail}
--   {"not_owner", owner}                 {"owned", owner}
--   {"invalid", detail}                  (nothing written)
-- where seller is the owner for a listing, the house's seller for a price.
local field, aid, amount, actor = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if field ~= 'listing' and field ~= 'price' then
  return {'invalid', 'field ' .. string.format('%q', field) .. ' is neither listing nor price'}
end
if amount ~= '' then
  if not (amount == '0' or string.match(amount, '^[1-9]%d*$')) or #amount > 16 or tonumber(amount) > tonumber(ARGV[7]) then
    return {'invalid', 'credits ' .. string.format('%q', amount) .. ' is not a whole number from 0 to ' .. ARGV[7]}
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'unknown_asset', 'no asset ' .. aid}
end
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
local seller = owner
if field == 'listing' then
  if owner == '' then
    return {'not_owned', 'nobody owns ' .. aid .. ': an asset nobody owns is sold by the house at its price (POST /v1/assets/' .. aid .. '/price)'}
  end
  if actor ~= '*' and actor ~= owner then
    return {'not_owner', owner}
  end
else
  if owner ~= '' and amount ~= '' then
    return {'owned', owner}
  end
  if seller == '' then
    seller = redis.call('HGET', KEYS[1], 'uploader') or ''
  end
  if seller == '' then
    seller = ARGV[8]
  end
end

local current = redis.call('HGET', KEYS[1], field) or ''
if current == amount then
  return {'unchanged', '', seller}
end
local action = 'set'
if amount == '' then
  redis.call('HDEL', KEYS[1], field)
  action = 'clear'
else
  redis.call('HSET', KEYS[1], field, amount)
end
local entry = redis.call('XADD', KEYS[2], '*', 'kind', field, 'action', action, 'asset_id', aid,
  'seller', seller, 'amount', amount, 'by', ARGV[5], 'at', ARGV[6])
-- The amount, checked above, goes into the JSON as written (cjson would
-- print a number with "%.14g"); cleared is null.
local credits = 'null'
if amount ~= '' then
  credits = amount
end
local fields, etype = {asset_id = aid, action = action, by = ARGV[5], entry_id = entry}, 'price.changed'
if field == 'listing' then
  fields.owner, etype = seller, 'listing.changed'
else
  fields.seller = seller
end
local data = '{"credits":' .. credits .. ',' .. string.sub(cjson.encode(fields), 2)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*',
  'type', etype, 'time', ARGV[6], 'data', data, 'accounts', seller)
if ARGV[10] ~= '0' then
  redis.call('XTRIM', KEYS[3], 'MINID', '~', ARGV[10])
end
return {'changed', entry, seller}
