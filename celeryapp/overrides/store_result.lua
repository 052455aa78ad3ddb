-- store_result.lua: store a task's state, unless SUCCESS is stored already; publish it to
-- the task's channel; add the task to the `turbo ls` list (celeryapp/overrides/backend.py).
--
-- Celery's guard (never overwrite SUCCESS: a redelivered duplicate cannot clobber a result)
-- made atomic, and the stock backend's GET + SET/PUBLISH pipeline + the recent list's ZADD
-- in one round trip.
--
-- KEYS: 1 the task's meta key (celery-task-meta-<id>), 2 the recent list (turbo:recent)
-- ARGV: 1 the meta JSON, 2 its time to live in s (0: none), 3 the recent list's member
--       ("task:<id>"; '': not listed), 4 its score (the time), 5 how many members to keep
-- Reply: 1, or 0 when the stored state is SUCCESS (nothing written)
--
-- By hand:
--   redis-cli --eval celeryapp/overrides/store_result.lua celery-task-meta-ID turbo:recent , \
--     '{"status": "STARTED", "result": null, "task_id": "ID"}' 86400 task:ID $(date +%s) 1000

local current = redis.call('GET', KEYS[1])
if current then
  local succeeded
  if string.sub(current, 1, 12) == '{"status": "' then
    succeeded = string.sub(current, 13, 20) == 'SUCCESS"'
  else
    local ok, meta = pcall(cjson.decode, current)
    succeeded = ok and type(meta) == 'table' and meta['status'] == 'SUCCESS'
  end
  if succeeded then return 0 end
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[2], 'NX', ARGV[4], ARGV[3])
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[5]) - 1)
end
return 1
