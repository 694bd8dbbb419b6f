"""The hub's Lua scripts: each runs atomically in Redis, so what it checks cannot change under it.

Frames are assembled here, in Redis: a frame's id (``<position>~<epoch>.<seq>``) takes the next
sequence number, which only Redis can hand out in order for every process of the deployment. A
frame travels as a *blob*: a JSON header line, then the SSE message, then for an update with a
patch its patch-only message (``changesync.hub.wire``). Both messages are assembled here, once.
"""

from __future__ import annotations

# KEYS: lease, term. ARGV: owner, ttl_ms. The lease's value ("<owner> <term>"), or nil when held.
ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local term = redis.call('INCR', KEYS[2])
local value = ARGV[1] .. ' ' .. term
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"""

# KEYS: lease. ARGV: value, ttl_ms. 1 when the lease was still ours and is extended, else 0.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease. ARGV: value. Let the lease go, if it is still ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lease, meta. ARGV: value, a fresh epoch, control channel, force (1: replace the epoch).
# The deployment's epoch and last position, for a watcher that takes over. The epoch is created when
# Redis has none (it lost its data), or replaced when forced (Redis's history diverged from ours).
LEAD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'fenced'} end
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if (not epoch) or ARGV[4] == '1' then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[2], 'epoch', epoch)
  redis.call('HSETNX', KEYS[2], 'seq', 0)
  redis.call('PUBLISH', ARGV[3], cjson.encode({'E', epoch}))
end
return {'ok', epoch, redis.call('HGET', KEYS[2], 'token') or ''}
"""

# Frame the changes of a batch, append them to their flows' histories, publish them, and move the
# deployment's position: all or nothing, and only for the lease's holder whose view of the position
# is Redis's (a watcher that paused, or a failover that lost writes, is refused).
#
# KEYS: lease, meta, then per frame its flow's history and last keys.
# ARGV: [1] lease value, [2] the position the watcher last stored, [3] its epoch, [4] history
# length, [5] history ttl_ms, [6] record ttl_ms, [7] flow channel prefix, [8] control channel,
# [9] idle (1: the stream is caught up), [10] the batch's final position, [11] [12] its cluster
# time (0 0: none), then the operations:
#   'C', position, ct_t, ct_i, n, then n times: flow, type, payload, collection, operation, key,
#        patch-only payload ('' when the frame has one variant)
#   'R', reason, position
PUBLISH_BATCH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'fenced'} end
local meta = KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch')
if epoch ~= ARGV[3] then return {'epoch', epoch or ''} end
local token = redis.call('HGET', meta, 'token') or ''
if token ~= ARGV[2] then return {'diverged', token} end
local seq = tonumber(redis.call('HGET', meta, 'seq') or '0')
local k, i = 3, 13
while i <= #ARGV do
  if ARGV[i] == 'C' then
    local position, n = ARGV[i + 1], tonumber(ARGV[i + 4])
    local t, c = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
    i = i + 5
    if n > 0 then seq = seq + 1 end
    local id = position .. '~' .. epoch .. '.' .. seq
    for _ = 1, n do
      local flow, etype, payload, patch = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 6]
      local head = 'event: ' .. etype .. '\\nid: ' .. id .. '\\ndata: '
      local message = head .. payload .. '\\n\\n'
      local header = {flow, etype, id, ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], seq, 0, t, c, #message}
      i = i + 7
      header[8] = tonumber(redis.call('GET', KEYS[k + 1]) or (seq - 1))
      if patch ~= '' then message = message .. head .. patch .. '\\n\\n' end
      local blob = cjson.encode(header) .. '\\n' .. message
      local sid = redis.call('XADD', KEYS[k], 'MAXLEN', '~', ARGV[4], '*', 'm', blob)
      redis.call('PEXPIRE', KEYS[k], ARGV[5])
      redis.call('SET', KEYS[k + 1], seq, 'PX', ARGV[6])
      redis.call('PUBLISH', ARGV[7] .. flow, sid .. ' ' .. blob)
      k = k + 2
    end
  else
    local reason, position = ARGV[i + 1], ARGV[i + 2]
    i = i + 3
    seq = seq + 1
    redis.call('HSET', meta, 'reset_seq', seq, 'reset_reason', reason)
    local id = position .. '~' .. epoch .. '.' .. seq
    redis.call('PUBLISH', ARGV[8], cjson.encode({'R', epoch, id, reason, seq}))
  end
end
redis.call('HSET', meta, 'token', ARGV[10], 'seq', seq)
local position = ARGV[10] .. '~' .. epoch .. '.' .. seq
local tick = {'T', epoch, position, ARGV[10], tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[9])}
redis.call('PUBLISH', ARGV[8], cjson.encode(tick))
return {'ok', seq}
"""

# An event a service published, framed after the deployment's latest position. From the ingest
# stream, the entry is acknowledged in the same step: published once, or left pending for a retry.
# KEYS: meta, history, last, published[, ingest stream]. ARGV: flow, type, payload, collection,
# operation, key, history length, history ttl_ms, record ttl_ms, flow channel prefix[, the ingest
# group, the entry's id].
PUBLISH_EVENT = """
local meta = KEYS[1]
local token = redis.call('HGET', meta, 'token')
local epoch = redis.call('HGET', meta, 'epoch')
if (not token) or (not epoch) then return {'unavailable'} end
if KEYS[5] and redis.call('XACK', KEYS[5], ARGV[11], ARGV[12]) == 0 then return {'duplicate'} end
local seq = redis.call('HINCRBY', meta, 'seq', 1)
local id = token .. '~' .. epoch .. '.' .. seq
local prev = tonumber(redis.call('GET', KEYS[3]) or (seq - 1))
local header = {ARGV[1], ARGV[2], id, ARGV[4], ARGV[5], ARGV[6], seq, prev, 0, 0}
local message = 'event: ' .. ARGV[2] .. '\\nid: ' .. id .. '\\ndata: ' .. ARGV[3] .. '\\n\\n'
local blob = cjson.encode(header) .. '\\n' .. message
local sid = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'm', blob)
redis.call('PEXPIRE', KEYS[2], ARGV[8])
redis.call('SET', KEYS[3], seq, 'PX', ARGV[9])
redis.call('SET', KEYS[4], seq, 'PX', ARGV[9])
redis.call('PUBLISH', ARGV[10] .. ARGV[1], sid .. ' ' .. blob)
return {'ok', id}
"""
