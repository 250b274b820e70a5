-- Claim one target for a sync attempt, atomically.
--
-- KEYS[1] campaign hash, KEYS[2] targets hash, KEYS[3] counts hash, KEYS[4] pool lock,
-- KEYS[5] events stream, KEYS[6] targets waiting for the in-flight cap (ZSET),
-- KEYS[7] time each target was last claimed or checked (HASH, read by housekeeping)
-- ARGV: target key, now (s), token, lease (s), max in flight (0 = no cap), max attempts,
--       max age (s, 0 = none), pool lock ttl (s), not after (s, 0 = none),
--       max failures (-1 = none), max failure ratio (-1 = none), events max length,
--       track completion ("1"/"0")
--
-- Returns {verdict, detail, attempts}. Verdicts:
--   claimed      target is now `submitting` with this token and attempt number
--   reconcile    a `submitting` target whose lease ran out: this token now owns it
--   wait         try again in `detail` seconds (lease held, not due), or `detail` is
--                "inflight" (the target joined KEYS[6] and is woken when a place frees up)
--                or "pool_locked" (another campaign syncs this pool)
--   paused       campaign paused or not yet open; nothing changed
--   done         target already past submitting
--   failed       target failed now (detail = reason)
--   skipped      target skipped now (detail = reason)
local key = ARGV[1]
local now = tonumber(ARGV[2])
local token = ARGV[3]
local lease = tonumber(ARGV[4])
local max_in_flight = tonumber(ARGV[5])
local max_attempts = tonumber(ARGV[6])
local max_age = tonumber(ARGV[7])
local lock_ttl = tonumber(ARGV[8])
local not_after = tonumber(ARGV[9])
local max_failures = tonumber(ARGV[10])
local max_failure_ratio = tonumber(ARGV[11])
local events_max = tonumber(ARGV[12])
local track = ARGV[13] == "1"

local raw = redis.call("HGET", KEYS[2], key)
if not raw then
  return {"done", "missing", 0}
end
local target = cjson.decode(raw)
redis.call("HSET", KEYS[7], key, ARGV[2])
local campaign_state = redis.call("HGET", KEYS[1], "state")
local campaign_id = redis.call("HGET", KEYS[1], "id")

local function count(state)
  return tonumber(redis.call("HGET", KEYS[3], state) or "0")
end

local terminal = {synced = true, sync_failed = true, failed = true, skipped = true}

local function finish_campaign_if_done()
  local total = tonumber(redis.call("HGET", KEYS[1], "target_total") or "0")
  local ended = count("synced") + count("sync_failed") + count("failed") + count("skipped")
  if not track then
    ended = ended + count("accepted")
  end
  local state = redis.call("HGET", KEYS[1], "state")
  if redis.call("HGET", KEYS[1], "expanded") == "1" and ended >= total
      and state ~= "finished" and state ~= "cancelled" then
    redis.call("HSET", KEYS[1], "state", "finished", "finished_at", tostring(now))
    redis.call("XADD", KEYS[5], "MAXLEN", "~", events_max, "*", "type", "campaign.finished",
      "campaign_id", campaign_id, "data", cjson.encode({state = "finished"}))
  end
end

local function end_target(state, reason)
  local old = target.state
  target.state = state
  target.reason = reason
  target.updatedAt = now
  target.leaseUntil = 0
  redis.call("HSET", KEYS[2], key, cjson.encode(target))
  redis.call("HINCRBY", KEYS[3], old, -1)
  redis.call("HINCRBY", KEYS[3], state, 1)
  if state == "failed" then
    redis.call("XADD", KEYS[5], "MAXLEN", "~", events_max, "*", "type", "target.failed",
      "campaign_id", campaign_id,
      "data", cjson.encode({target = key, reason = reason, attempts = target.attempts}))
  end
  finish_campaign_if_done()
  return {state, reason, target.attempts}
end

if target.state ~= "pending" and target.state ~= "submitting" then
  return {"done", target.state, target.attempts}
end

if campaign_state == "cancelled" then
  if target.state == "pending" then
    return end_target("skipped", "cancelled")
  end
end

if target.state == "submitting" then
  if tonumber(target.leaseUntil) > now then
    return {"wait", tostring(tonumber(target.leaseUntil) - now), target.attempts}
  end
  target.token = token
  target.leaseUntil = now + lease
  target.updatedAt = now
  redis.call("HSET", KEYS[2], key, cjson.encode(target))
  return {"reconcile", "", target.attempts}
end

-- The target is pending from here on.
if campaign_state == "paused" or campaign_state == "pending" then
  return {"paused", campaign_state, target.attempts}
end

if not_after > 0 and now > not_after then
  return end_target("skipped", "window_closed")
end

local failures = count("failed") + count("sync_failed")
local total = tonumber(redis.call("HGET", KEYS[1], "target_total") or "0")
if max_failures >= 0 and failures > max_failures then
  return end_target("skipped", "error_budget")
end
if max_failure_ratio >= 0 and total > 0 and failures / total > max_failure_ratio then
  return end_target("skipped", "error_budget")
end

if tonumber(target.dueAt) > now then
  return {"wait", tostring(tonumber(target.dueAt) - now), target.attempts}
end

if max_attempts > 0 and tonumber(target.attempts) >= max_attempts then
  return end_target("failed", "retries_exhausted")
end
local first = tonumber(target.firstAttemptAt)
if max_age > 0 and first > 0 and now - first > max_age then
  return end_target("failed", "expired")
end

if max_in_flight > 0 then
  local in_flight = count("submitting")
  if track then
    in_flight = in_flight + count("accepted")
  end
  if in_flight >= max_in_flight then
    redis.call("ZADD", KEYS[6], "NX", now, key)
    return {"wait", "inflight", target.attempts}
  end
end

local owner = campaign_id .. "|" .. key
local holder = redis.call("GET", KEYS[4])
if holder and holder ~= owner then
  return {"wait", "pool_locked", target.attempts}
end
redis.call("SET", KEYS[4], owner, "EX", lock_ttl)
redis.call("ZREM", KEYS[6], key)

target.state = "submitting"
target.attempts = tonumber(target.attempts) + 1
target.token = token
target.leaseUntil = now + lease
target.updatedAt = now
if first == 0 then
  target.firstAttemptAt = now
end
redis.call("HSET", KEYS[2], key, cjson.encode(target))
redis.call("HINCRBY", KEYS[3], "pending", -1)
redis.call("HINCRBY", KEYS[3], "submitting", 1)
return {"claimed", "", target.attempts}
