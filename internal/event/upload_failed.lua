-- Append an event once per failure: the mark (KEYS[1]) names the failure
-- (upload task ID and failure code); while it is set, nothing is written.
-- The mark and the event are written together.
--
-- KEYS[1] the failure's mark (string, expires)   KEYS[2] events stream
-- ARGV[1] event type   ARGV[2] time (RFC 3339, UTC)   ARGV[3] data (JSON object)
-- ARGV[4] accounts the event is about (space-separated; "" none)
-- ARGV[5] the stream's length to keep (XADD MAXLEN ~)
-- ARGV[6] the oldest entry ID to keep (XTRIM MINID ~; "0": no age limit)
-- ARGV[7] the mark's lifetime, seconds
--
-- Returns {"written", event id} or {"exists", the event id written before}.
local before = redis.call('GET', KEYS[1])
if before then
  return {'exists', before}
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*',
  'type', ARGV[1], 'time', ARGV[2], 'data', ARGV[3], 'accounts', ARGV[4])
if ARGV[6] ~= '0' then
  redis.call('XTRIM', KEYS[2], 'MINID', '~', ARGV[6])
end
redis.call('SET', KEYS[1], id, 'EX', ARGV[7])
return {'written', id}
