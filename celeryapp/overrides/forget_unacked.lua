-- forget_unacked.lua: acks - remove messages' unacked records, where this holder holds them
-- (celeryapp/overrides/transport.py; the keys of record_unacked.lua).
--
-- A record that names another holder is left alone: a late ack (this worker was cut off, a
-- survivor put the message back and another worker took it) must not erase the new
-- holder's record. A record without a holder (written by kombu's own code) is removed.
--
-- KEYS: 1 the unacked index (kombu's `unacked_index`), 2 the unacked records (`unacked`),
--       3 the holders (turbo:unacked_holders)
-- ARGV: 1 this holder's id, then the delivery tags (at most transport.LUA_UNPACK_CAP a call)
-- Reply: 1
--
-- By hand:
--   redis-cli --eval celeryapp/overrides/forget_unacked.lua unacked_index unacked \
--     turbo:unacked_holders , host:123:abcd1234 TAG1 TAG2

for i = 2, #ARGV do
  local holder = redis.call('HGET', KEYS[3], ARGV[i])
  if (not holder) or holder == ARGV[1] then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
    redis.call('HDEL', KEYS[3], ARGV[i])
  end
end
return 1
