-- record_unacked.lua: record a batch of delivered messages as unacked, and who holds them
-- (celeryapp/overrides/transport.py, before any of the batch is delivered).
--
-- kombu's unacked bookkeeping (the same keys and values as its MULTI/EXEC per message) for a
-- whole batch in one script, plus each message's holder (celeryapp/core/holders.py).
-- One file per script, no dispatcher: this one and forget_unacked.lua share no helper, and
-- each runs by hand as it stands.
--
-- KEYS: 1 the unacked index (sorted set: tag -> delivery time; kombu's `unacked_index`),
--       2 the unacked records (hash: tag -> [payload, exchange, routing key]; `unacked`),
--       3 the holders (hash: tag -> holder id; turbo:unacked_holders)
-- ARGV: 1 the time, 2 the holder's id, then for each message its delivery tag and record
-- Reply: 1
--
-- By hand:
--   redis-cli --eval celeryapp/overrides/record_unacked.lua unacked_index unacked \
--     turbo:unacked_holders , $(date +%s) host:123:abcd1234 TAG '[{...}, "", "celery"]'

for i = 3, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[2])
end
return 1
