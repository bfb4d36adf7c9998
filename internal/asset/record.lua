-- Record an asset, or find the record that exists. Atomic: the record, its
-- two index entries and the spool link appear together or not at all.
--
-- KEYS[1] record hash        KEYS[2] by-time index (zset, score 0)
-- KEYS[3] by-type index      KEYS[4] spool link (string)
-- ARGV[1] asset id           ARGV[2] sha256 of the content
-- ARGV[3] index member       ARGV[4] spool link TTL, seconds (0: no link)
-- ARGV[5..] field, value pairs of the record hash
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
for i = 5, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[2], 0, ARGV[3])
redis.call('ZADD', KEYS[3], 0, ARGV[3])
if tonumber(ARGV[4]) > 0 then
  redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[4])
end
return {1, ARGV[1]}
