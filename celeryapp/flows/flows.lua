-- flows.lua: every change of a workflow's state, one atomic, idempotent command per
-- transition (run by celeryapp/flows/store.py; `create` also by the turbo shell).
--
-- One dispatcher (the helpers, then one branch per command, chosen by ARGV[1]), not one
-- file per transition with the helpers prepended at load: this file is byte for byte the
-- script Redis runs, so it reads with syntax highlighting and runs by hand as it stands
-- (below); the helpers are written once; one SHA per server (after a failover, one
-- NOSCRIPT reload instead of nine). Branches rather than a table of command functions: a
-- call defines only the helpers, as one script per transition did (~1 us more a call).
--
-- KEYS, every command (celeryapp/flows/layout.py keys()):
--   1 turbo:flow:<id>:meta  2 :spec  3 :children  4 :state  5 :info  6 :result
--   7 :pending  8 :inflight  9 :failed  10 turbo:flows:running
--   `started` adds 11: the task's result key (celery-task-meta-<task id>), when known.
-- ARGV: the command, the workflow id, then the command's own arguments. Replies: after ->.
--
--   create    meta, steps, expiry            meta: JSON {field: text}; steps: JSON
--                                            [[name, static JSON, children JSON, needs], ...]
--             -> 1, or 0 when the workflow exists already
--   start     now                            claims every pending step whose needs all
--             -> claims                      succeeded (the start, and the repair pass's
--                                            backstop): O(steps), once per workflow
--   started   step, task id, now, worker,    the message `tag` (delivery tag, '' unknown)
--             attempt, tag, take_over        starts this attempt; take_over '1': from the
--             -> {outcome, tag}              message that started it before (its holder died)
--             outcome: 'started'; 'stale' (not in flight under this task id: nothing
--             changed); 'ended' (the task's final state is stored: not started, the caller
--             applies its transition); 'cancelled' (cancelled with its workflow: not to
--             run, whether or not this worker heard the revoke); 'copy' (another message
--             of this attempt started it: its tag follows; the caller runs this copy only
--             if no live worker holds that message, then again with take_over '1')
--   queued    step, task id, now             a claimed step was published
--             -> 1, or 0 (stale)
--   succeeded step, task id, now, result,    result: the summary JSON; added: the steps it
--             added                          adds, JSON [[name, static JSON, [needs]], ...]
--             -> claims, or {'conflict',     validated by the caller on a snapshot, or ''
--                names...}                   (an added name exists already: nothing changed)
--   failed    step, task id, now, state,     state: failed | cancelled; its descendants are
--             error                          skipped (error '' keeps the step's own)
--             -> claims (never any step)
--   cancel    now                            every step not yet ended becomes cancelled
--             -> {'cancelled', task ids of the steps that were in flight...}, or {'stale'}
--   notice    now, grace                     the notice is an outbox entry: 'due' when the
--             -> 1 to the one caller that    workflow ended, 'sending' (since notice_at)
--                is to send it, else 0       while one caller sends it, 'sent' (noticed);
--                                            sent again by a caller that finds a sender
--                                            holding it past `grace` s (it died): at least once
--   noticed   (none)                         the notice went out: the workflow leaves the
--             -> 1                           repair pass's set
--
-- claims: {'applied', final, step, task id, step, task id, ...} or {'stale', ''} (nothing
--   changed). final: the workflow's final state when this very call ended it, else ''
--   (so that one caller sends its notice). The (step, task id) pairs are steps this call
--   claimed ("dispatching"): the caller publishes them outside any lock, then `queued`.
--
-- Every transition of a step checks the step's state and task id first (`current`), so a
-- repeated or late event (succeeded twice, a hook and the repair pass racing) changes
-- nothing. Each is O(the step's children) (O(descendants) for a skip), never O(workflow).
--
-- By hand, from the repository's root (ID: a workflow id; `start` claims what is due):
--   F=turbo:flow:$ID; redis-cli --eval celeryapp/flows/flows.lua $F:meta $F:spec \
--     $F:children $F:state $F:info $F:result $F:pending $F:inflight $F:failed \
--     turbo:flows:running , start $ID $(date +%s)

local META, SPEC, CHILDREN, STATE, INFO, RESULT, PENDING, INFLIGHT, FAILED, RUNNING =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local command, flow_id = ARGV[1], ARGV[2]
local IN_FLIGHT = {dispatching = true, queued = true, running = true}
local TERMINAL = {succeeded = true, failed = true, skipped = true, cancelled = true}

-- --- helpers -----------------------------------------------------------------------------

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

-- a step's task id: derived from the workflow and the step (layout.step_task_id), so that
-- a step published again (repair) keeps its id
local function task_id_for(step)
  local h = redis.sha1hex(flow_id .. '/' .. step)
  return h:sub(1, 8) .. '-' .. h:sub(9, 12) .. '-' .. h:sub(13, 16) .. '-' .. h:sub(17, 20)
    .. '-' .. h:sub(21, 32)
end

local function claim(step, now, out)
  local info = info_of(step)
  info.task_id = task_id_for(step)
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

-- the notice is due (sent once: see `notice`), or with none asked for the workflow leaves
-- the repair pass's set
local function notice_due()
  local notify = redis.call('HGET', META, 'notify')
  if notify and notify ~= '' then
    redis.call('HSET', META, 'notice', 'due')
  else
    redis.call('ZREM', RUNNING, flow_id)
  end
end

-- the workflow ends when every step is terminal: returns its final state, or ''
local function maybe_finish(now)
  if redis.call('HGET', META, 'state') ~= 'running' then return '' end
  local total = tonumber(redis.call('HGET', META, 'total')) or 0
  local counts = redis.call('HMGET', META, 'n:succeeded', 'n:failed', 'n:skipped', 'n:cancelled')
  local done = 0
  for _, count in ipairs(counts) do done = done + (tonumber(count) or 0) end
  if done < total then return '' end
  local final = 'failed'
  if (tonumber(counts[1]) or 0) == total then final = 'succeeded' end
  redis.call('HSET', META, 'state', final, 'ended', now)
  notice_due()
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

local function final_state_stored()
  local stored = KEYS[11] and redis.call('GET', KEYS[11])
  if stored and (string.find(stored, 'SUCCESS', 1, true)
      or string.find(stored, 'FAILURE', 1, true) or string.find(stored, 'REVOKED', 1, true)) then
    local ok, doc = pcall(cjson.decode, stored)
    return ok and type(doc) == 'table' and (doc.status == 'SUCCESS'
      or doc.status == 'FAILURE' or doc.status == 'REVOKED')
  end
  return false
end

-- added steps (a succeeded step's expansion): stored, wired to their needs; those that
-- need a step that failed, was skipped or cancelled are skipped at once
local function add_steps(step, added, now)
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

-- --- commands ----------------------------------------------------------------------------

-- create: store a new workflow
if command == 'create' then
  local meta_json, steps_json, expiry = unpack(ARGV, 3)
  if redis.call('EXISTS', META) == 1 then return 0 end
  local meta = cjson.decode(meta_json)
  for field, value in pairs(meta) do redis.call('HSET', META, field, value) end
  local steps = cjson.decode(steps_json)
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
  for i = 1, 9 do redis.call('EXPIRE', KEYS[i], expiry) end
  redis.call('ZADD', RUNNING, meta.created, flow_id)
  return 1

-- start: claim every pending step whose needs all succeeded
elseif command == 'start' then
  local now = ARGV[3]
  if redis.call('HGET', META, 'state') ~= 'running' then return {'stale', ''} end
  local out = {'applied', ''}
  local counters = redis.call('HGETALL', PENDING)
  for i = 1, #counters, 2 do
    if tonumber(counters[i + 1]) <= 0 and redis.call('HGET', STATE, counters[i]) == 'pending' then
      claim(counters[i], now, out)
    end
  end
  out[2] = maybe_finish(now)
  return out

-- started: a message starts an attempt of a step
elseif command == 'started' then
  local step, task_id, now, worker, attempt, tag, take_over = unpack(ARGV, 3)
  if final_state_stored() then return {'ended', ''} end
  local state, info = current(step, task_id)
  if not state then
    if redis.call('HGET', STATE, step) == 'cancelled'
        and info_of(step).task_id == task_id then return {'cancelled', ''} end
    return {'stale', ''}
  end
  attempt, tag = tonumber(attempt), tag or ''
  if state == 'running' and take_over ~= '1' and tag ~= '' and type(info.tag) == 'string'
      and info.tag ~= tag and attempt <= (tonumber(info.attempts) or 0) then
    return {'copy', info.tag}
  end
  if state ~= 'running' then set_state(step, state, 'running') end
  info.worker = worker
  info.attempts = attempt
  if tag ~= '' then info.tag = tag end
  if info.started == nil or info.started == cjson.null then info.started = tonumber(now) end
  redis.call('HSET', INFO, step, cjson.encode(info))
  return {'started', ''}

-- queued: a claimed step was published
elseif command == 'queued' then
  local step, task_id, now = unpack(ARGV, 3)
  local state, info = current(step, task_id)
  if state ~= 'dispatching' then return 0 end
  info.queued = tonumber(now)
  redis.call('HSET', INFO, step, cjson.encode(info))
  set_state(step, state, 'queued')
  return 1

-- succeeded: a step succeeded: its added steps stored, its children counted down
elseif command == 'succeeded' then
  local step, task_id, now, result, added_json = unpack(ARGV, 3)
  local state, info = current(step, task_id)
  if not state then return {'stale', ''} end
  local out = {'applied', ''}
  local added = {}
  if added_json ~= '' then added = cjson.decode(added_json) end
  if #added > 0 then
    local clash = {'conflict'}
    for _, row in ipairs(added) do
      if redis.call('HEXISTS', STATE, row[1]) == 1 then clash[#clash + 1] = row[1] end
    end
    if #clash > 1 then return clash end
    add_steps(step, added, now)
  end
  info.ended = tonumber(now)
  redis.call('HSET', INFO, step, cjson.encode(info))
  redis.call('HSET', RESULT, step, result)
  set_state(step, state, 'succeeded')
  for _, child in ipairs(cjson.decode(redis.call('HGET', CHILDREN, step) or '[]')) do
    if redis.call('HGET', STATE, child) == 'pending' then
      if redis.call('HINCRBY', PENDING, child, -1) <= 0 then claim(child, now, out) end
    end
  end
  for _, row in ipairs(added) do  -- added steps that need nothing still pending
    if redis.call('HGET', STATE, row[1]) == 'pending'
        and tonumber(redis.call('HGET', PENDING, row[1])) <= 0 then
      claim(row[1], now, out)
    end
  end
  out[2] = maybe_finish(now)
  return out

-- failed: a step failed or was cancelled: its descendants skipped
elseif command == 'failed' then
  local step, task_id, now, new_state, error_text = unpack(ARGV, 3)
  now = tonumber(now)
  local state, info = current(step, task_id)
  if not state then return {'stale', ''} end
  info.ended = now
  if error_text ~= '' then info.error = error_text end
  redis.call('HSET', INFO, step, cjson.encode(info))
  set_state(step, state, new_state)
  skip_from(step, step, new_state, now)
  return {'applied', maybe_finish(now)}

-- cancel: the workflow cancelled: every step not yet ended
elseif command == 'cancel' then
  local now = ARGV[3]
  if redis.call('HGET', META, 'state') ~= 'running' then return {'stale'} end
  now = tonumber(now)
  local out = {'cancelled'}
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
  notice_due()
  return out

-- notice: take the workflow's notice to send
elseif command == 'notice' then
  local now, grace = unpack(ARGV, 3)
  local notice = redis.call('HGET', META, 'notice')
  now = tonumber(now)
  if notice == 'due' or (notice == 'sending'
      and (tonumber(redis.call('HGET', META, 'notice_at')) or 0) < now - tonumber(grace)) then
    redis.call('HSET', META, 'notice', 'sending', 'notice_at', now)
    return 1
  end
  if notice ~= 'sending' and redis.call('HGET', META, 'state') ~= 'running' then
    redis.call('ZREM', RUNNING, flow_id)
  end
  return 0

-- noticed: the notice went out
elseif command == 'noticed' then
  if redis.call('HGET', META, 'notice') == 'sending' then
    redis.call('HSET', META, 'notice', 'sent')
  end
  if redis.call('HGET', META, 'state') ~= 'running' then redis.call('ZREM', RUNNING, flow_id) end
  return 1
end

return redis.error_reply('flows.lua: unknown command ' .. tostring(command))
