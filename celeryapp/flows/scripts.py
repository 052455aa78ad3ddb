"""The Lua scripts that change a workflow: each transition is one atomic, idempotent script.

KEYS are always :func:`.layout.keys` (nine per-workflow keys, then the running set; the
start of a step adds the task's result key: ``FlowStore.run(keys=)``).
A transition for a step checks the step's current state and task id first, so a repeated
or late event ("succeeded" twice for the same task, a hook and the repair pass racing)
changes nothing. The work of a transition is O(its children) (O(descendants) for a skip),
never O(workflow): no whole-document rewrite, no lock.

Replies are flat arrays: ``{code, final_state_or_'', step, task_id, step, task_id, ...}``
where the (step, task id) pairs are steps the script claimed as "dispatching": the caller
publishes them (outside any lock) and then marks them "queued". ``final_state`` is set
when this very call ended the workflow, so one caller sends its notice (NOTICE: at least
once).
Standard library only: the ``turbo`` shell runs the creation script too.
"""
from __future__ import annotations

PRELUDE = r"""
local META, SPEC, CHILDREN, STATE, INFO, RESULT, PENDING, INFLIGHT, FAILED, RUNNING =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local IN_FLIGHT = {dispatching = true, queued = true, running = true}
local TERMINAL = {succeeded = true, failed = true, skipped = true, cancelled = true}

local function info_of(step)
  local raw = redis.call('HGET', INFO, step)
  if raw then
    local ok, doc = pcall(cjson.decode, raw)
    if ok and type(doc) == 'table' then return doc end
  end
  return {}
end

local function set_state(step, old, new)
  redis.call('HSET', STATE, step, new)
  redis.call('HINCRBY', META, 'n:' .. old, -1)
  redis.call('HINCRBY', META, 'n:' .. new, 1)
  if IN_FLIGHT[new] then
    redis.call('SADD', INFLIGHT, step)
  elseif IN_FLIGHT[old] then
    redis.call('SREM', INFLIGHT, step)
  end
  if new == 'failed' then redis.call('SADD', FAILED, step) end
end

local function task_id_for(flow_id, step)
  local h = redis.sha1hex(flow_id .. '/' .. step)
  return h:sub(1, 8) .. '-' .. h:sub(9, 12) .. '-' .. h:sub(13, 16) .. '-' .. h:sub(17, 20)
    .. '-' .. h:sub(21, 32)
end

local function claim(flow_id, step, now, out)
  local info = info_of(step)
  info.task_id = task_id_for(flow_id, step)
  info.claimed = tonumber(now)
  redis.call('HSET', INFO, step, cjson.encode(info))
  set_state(step, 'pending', 'dispatching')
  out[#out + 1] = step
  out[#out + 1] = info.task_id
end

-- every pending step that descends from `root` becomes skipped (breadth first, through
-- pending steps only: a step that is not pending has had its own descendants settled)
local function skip_from(root, because, why, now)
  local queue = {root}
  local i = 1
  local message = "step '" .. because .. "' " .. why
  while i <= #queue do
    local raw = redis.call('HGET', CHILDREN, queue[i])
    i = i + 1
    if raw then
      for _, child in ipairs(cjson.decode(raw)) do
        if redis.call('HGET', STATE, child) == 'pending' then
          local info = info_of(child)
          info.ended = now
          info.skipped_because = because
          info.error = message
          redis.call('HSET', INFO, child, cjson.encode(info))
          set_state(child, 'pending', 'skipped')
          queue[#queue + 1] = child
        end
      end
    end
  end
end

-- the workflow ends when every step is terminal: returns its final state, or ''
local function maybe_finish(flow_id, now)
  if redis.call('HGET', META, 'state') ~= 'running' then return '' end
  local total = tonumber(redis.call('HGET', META, 'total')) or 0
  local counts = redis.call('HMGET', META, 'n:succeeded', 'n:failed', 'n:skipped', 'n:cancelled')
  local done = 0
  for _, count in ipairs(counts) do done = done + (tonumber(count) or 0) end
  if done < total then return '' end
  local final = 'failed'
  if (tonumber(counts[1]) or 0) == total then final = 'succeeded' end
  redis.call('HSET', META, 'state', final, 'ended', now)
  local notify = redis.call('HGET', META, 'notify')
  if notify and notify ~= '' then
    redis.call('HSET', META, 'notice', 'due')  -- sent once: see NOTICE
  else
    redis.call('ZREM', RUNNING, flow_id)
  end
  return final
end

-- the step is in flight under this task id, or the event is stale: returns state, info
local function current(step, task_id)
  local state = redis.call('HGET', STATE, step)
  if not state or not IN_FLIGHT[state] then return nil end
  local info = info_of(step)
  if info.task_id ~= task_id then return nil end
  return state, info
end
"""

# ARGV: meta JSON {field: text}, steps JSON [[name, static JSON, children JSON, needs], ...]
# expiry seconds. Returns 0 when the workflow exists already.
CREATE = PRELUDE + r"""
if redis.call('EXISTS', META) == 1 then return 0 end
local meta = cjson.decode(ARGV[1])
for field, value in pairs(meta) do redis.call('HSET', META, field, value) end
local steps = cjson.decode(ARGV[2])
for _, row in ipairs(steps) do
  local name = row[1]
  redis.call('HSET', SPEC, name, row[2])
  redis.call('HSET', CHILDREN, name, row[3])
  redis.call('HSET', STATE, name, 'pending')
  redis.call('HSET', PENDING, name, row[4])
  redis.call('HSET', INFO, name, '{}')
end
redis.call('HSET', META, 'total', #steps, 'n:pending', #steps)
redis.call('SADD', INFLIGHT, '')
redis.call('SADD', FAILED, '')
redis.call('HSET', RESULT, '', 'null')
for i = 1, 9 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
redis.call('ZADD', RUNNING, meta.created, meta.id)
return 1
"""

# ARGV: flow id, now. Claims every pending step whose needs all succeeded (the start, and
# the repair pass's backstop): O(steps), once per workflow.
START = PRELUDE + r"""
local out = {1, ''}
if redis.call('HGET', META, 'state') ~= 'running' then return {0, ''} end
local counters = redis.call('HGETALL', PENDING)
for i = 1, #counters, 2 do
  if tonumber(counters[i + 1]) <= 0 and redis.call('HGET', STATE, counters[i]) == 'pending' then
    claim(ARGV[1], counters[i], ARGV[2], out)
  end
end
out[2] = maybe_finish(ARGV[1], ARGV[2])
return out
"""

# KEYS[11] (when given): the task's result key. ARGV: step, task id, now, worker, attempt,
# the delivery tag of the message starting it ('' unknown), '1' to take the step over from
# that tag.
# Replies 1 (started), 0 (a stale event: nothing changed), 2 (the task's final state is
# stored: not started; the caller applies its transition), 3 (the step was cancelled with
# its workflow: not to run, whether or not this worker heard the revoke) or, when another
# message of this attempt started the step already, that message's tag: the caller runs
# this copy only if no live worker holds that message (then again with '1').
STARTED = PRELUDE + r"""
local meta = KEYS[11] and redis.call('GET', KEYS[11])
if meta and (string.find(meta, 'SUCCESS', 1, true) or string.find(meta, 'FAILURE', 1, true)
    or string.find(meta, 'REVOKED', 1, true)) then
  local ok, doc = pcall(cjson.decode, meta)
  if ok and type(doc) == 'table' and (doc.status == 'SUCCESS' or doc.status == 'FAILURE'
      or doc.status == 'REVOKED') then return 2 end
end
local state, info = current(ARGV[1], ARGV[2])
if not state then
  if redis.call('HGET', STATE, ARGV[1]) == 'cancelled'
      and info_of(ARGV[1]).task_id == ARGV[2] then return 3 end
  return 0
end
local attempt, tag = tonumber(ARGV[5]), ARGV[6] or ''
if state == 'running' and ARGV[7] ~= '1' and tag ~= '' and type(info.tag) == 'string'
    and info.tag ~= tag and attempt <= (tonumber(info.attempts) or 0) then
  return info.tag
end
if state ~= 'running' then set_state(ARGV[1], state, 'running') end
info.worker = ARGV[4]
info.attempts = attempt
if tag ~= '' then info.tag = tag end
if info.started == nil or info.started == cjson.null then info.started = tonumber(ARGV[3]) end
redis.call('HSET', INFO, ARGV[1], cjson.encode(info))
return 1
"""

# ARGV: step, task id, now
QUEUED = PRELUDE + r"""
local state, info = current(ARGV[1], ARGV[2])
if state ~= 'dispatching' then return 0 end
info.queued = tonumber(ARGV[3])
redis.call('HSET', INFO, ARGV[1], cjson.encode(info))
set_state(ARGV[1], state, 'queued')
return 1
"""

# ARGV: flow id, step, task id, now, result summary JSON, added steps JSON or ''
#   added steps: [[name, static JSON, [needs]], ...], validated by the caller on a snapshot.
# Reply code 2 (nothing changed): an added step's name exists already; its names follow.
SUCCEEDED = PRELUDE + r"""
local flow_id, step, now = ARGV[1], ARGV[2], ARGV[4]
local state, info = current(step, ARGV[3])
if not state then return {0, ''} end
local out = {1, ''}
local added = {}
if ARGV[6] ~= '' then added = cjson.decode(ARGV[6]) end
if #added > 0 then
  local clash = {}
  for _, row in ipairs(added) do
    if redis.call('HEXISTS', STATE, row[1]) == 1 then clash[#clash + 1] = row[1] end
  end
  if #clash > 0 then return {2, table.concat(clash, ', ')} end
  for _, row in ipairs(added) do
    redis.call('HSET', SPEC, row[1], row[2])
    redis.call('HSET', STATE, row[1], 'pending')
    redis.call('HSET', INFO, row[1], '{}')
    redis.call('HSET', CHILDREN, row[1], '[]')
    redis.call('HINCRBY', META, 'total', 1)
    redis.call('HINCRBY', META, 'n:pending', 1)
  end
  local blocked = {}
  for index, row in ipairs(added) do
    local waiting = 0
    for _, need in ipairs(row[3]) do
      local kids = cjson.decode(redis.call('HGET', CHILDREN, need) or '[]')
      kids[#kids + 1] = row[1]
      redis.call('HSET', CHILDREN, need, cjson.encode(kids))
      local need_state = redis.call('HGET', STATE, need)
      if need == step or need_state ~= 'succeeded' then waiting = waiting + 1 end
      if need ~= step and blocked[index] == nil and (need_state == 'failed'
          or need_state == 'skipped' or need_state == 'cancelled') then
        blocked[index] = {need, need_state}
      end
    end
    redis.call('HSET', PENDING, row[1], waiting)
  end
  for index, row in ipairs(added) do
    local why = blocked[index]
    if why and redis.call('HGET', STATE, row[1]) == 'pending' then
      local doc = {ended = tonumber(now), skipped_because = why[1],
                   error = "step '" .. why[1] .. "' " .. why[2]}
      redis.call('HSET', INFO, row[1], cjson.encode(doc))
      set_state(row[1], 'pending', 'skipped')
      skip_from(row[1], why[1], why[2], tonumber(now))
    end
  end
end
info.ended = tonumber(now)
redis.call('HSET', INFO, step, cjson.encode(info))
redis.call('HSET', RESULT, step, ARGV[5])
set_state(step, state, 'succeeded')
for _, child in ipairs(cjson.decode(redis.call('HGET', CHILDREN, step) or '[]')) do
  if redis.call('HGET', STATE, child) == 'pending' then
    if redis.call('HINCRBY', PENDING, child, -1) <= 0 then claim(flow_id, child, now, out) end
  end
end
for _, row in ipairs(added) do  -- added steps that need nothing still pending
  if redis.call('HGET', STATE, row[1]) == 'pending'
      and tonumber(redis.call('HGET', PENDING, row[1])) <= 0 then
    claim(flow_id, row[1], now, out)
  end
end
out[2] = maybe_finish(flow_id, now)
return out
"""

# ARGV: flow id, step, task id, now, new state (failed|cancelled), error, why ("failed")
FAILED = PRELUDE + r"""
local flow_id, step, now = ARGV[1], ARGV[2], tonumber(ARGV[4])
local state, info = current(step, ARGV[3])
if not state then return {0, ''} end
info.ended = now
if ARGV[6] ~= '' then info.error = ARGV[6] end
redis.call('HSET', INFO, step, cjson.encode(info))
set_state(step, state, ARGV[5])
skip_from(step, step, ARGV[7], now)
return {1, maybe_finish(flow_id, now)}
"""

# ARGV: flow id, now. Every step not yet terminal becomes cancelled; replies
# {1, 'cancelled', task ids of the steps that were in flight...}
CANCEL = PRELUDE + r"""
if redis.call('HGET', META, 'state') ~= 'running' then return {0, ''} end
local now = tonumber(ARGV[2])
local out = {1, 'cancelled'}
local states = redis.call('HGETALL', STATE)
for i = 1, #states, 2 do
  local step, state = states[i], states[i + 1]
  if not TERMINAL[state] then
    local info = info_of(step)
    if IN_FLIGHT[state] and info.task_id then out[#out + 1] = info.task_id end
    info.ended = now
    redis.call('HSET', INFO, step, cjson.encode(info))
    set_state(step, state, 'cancelled')
  end
end
redis.call('HSET', META, 'state', 'cancelled', 'ended', now)
local notify = redis.call('HGET', META, 'notify')
if notify and notify ~= '' then
  redis.call('HSET', META, 'notice', 'due')
else
  redis.call('ZREM', RUNNING, ARGV[1])
end
return out
"""

# ARGV: flow id, now, grace. The notice is an outbox entry: "due" when the workflow ended,
# "sending" (since ``notice_at``) while one caller sends it, "sent" once it went out
# (NOTICED). Replies 1 to the one caller that is to send it: the first, or a later one
# when a sender has held it past ``grace`` seconds (it died before NOTICED: at least once).
NOTICE = PRELUDE + r"""
local notice = redis.call('HGET', META, 'notice')
local now = tonumber(ARGV[2])
if notice == 'due' or (notice == 'sending'
    and (tonumber(redis.call('HGET', META, 'notice_at')) or 0) < now - tonumber(ARGV[3])) then
  redis.call('HSET', META, 'notice', 'sending', 'notice_at', now)
  return 1
end
if notice ~= 'sending' and redis.call('HGET', META, 'state') ~= 'running' then
  redis.call('ZREM', RUNNING, ARGV[1])
end
return 0
"""

# ARGV: flow id. The notice went out: the workflow leaves the repair pass's set.
NOTICED = PRELUDE + r"""
if redis.call('HGET', META, 'notice') == 'sending' then
  redis.call('HSET', META, 'notice', 'sent')
end
if redis.call('HGET', META, 'state') ~= 'running' then redis.call('ZREM', RUNNING, ARGV[1]) end
return 1
"""

ALL = {"create": CREATE, "start": START, "started": STARTED, "queued": QUEUED,
       "succeeded": SUCCEEDED, "failed": FAILED, "cancel": CANCEL, "notice": NOTICE,
       "noticed": NOTICED}
