-- Record an asset, or find the record that exists. Atomic: the record, its
-- two index entries, the spool link and the asset.recorded event appear
-- together or not at all; a record that exists writes no event.
--
-- KEYS[1] record hash        KEYS[2] by-time index (zset, score 0)
-- KEYS[3] by-type index      KEYS[4] spool link (string)
-- KEYS[5] events stream
-- ARGV[1] asset id           ARGV[2] sha256 of the content
-- ARGV[3] index member       ARGV[4] spool link TTL, seconds (0: no link)
-- ARGV[5] event time (RFC 3339, UTC)
-- ARGV[6] event data: the record as the API shows it (JSON)
-- ARGV[7] accounts the event is about: the owner ("" none)
-- ARGV[8] the events stream's length to keep (XADD MAXLEN ~)
-- ARGV[9] the oldest event ID to keep (XTRIM MINID ~; "0": no age limit)
-- ARGV[10..] field, value pairs of the record hash
--
-- Returns {1, id} created; {0, id} exists with the same sha256 (idempotent
-- re-run); {-1, existing sha256} exists with other content.
local existing = redis.call('HGET', KEYS[1], 'sha256')
if existing then
  if existing ~= ARGV[2] then
    return {-1, existing}
  end
  if tonumber(ARGV[4]) > 0 then
    redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[4])
  end
  return {0, ARGV[1]}
end
local fields = {}
for i = 10, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[2], 0, ARGV[3])
redis.call('ZADD', KEYS[3], 0, ARGV[3])
if tonumber(ARGV[4]) > 0 then
  redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[4])
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[8], '*',
  'type', 'asset.recorded', 'time', ARGV[5], 'data', ARGV[6], 'accounts', ARGV[7])
if ARGV[9] ~= '0' then
  redis.call('XTRIM', KEYS[5], 'MINID', '~', ARGV[9])
end
return {1, ARGV[1]}
