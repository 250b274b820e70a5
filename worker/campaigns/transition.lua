-- Move one target from one of the expected states to a new one, atomically.
--
-- KEYS[1] campaign hash, KEYS[2] targets hash, KEYS[3] counts hash, KEYS[4] pool lock,
-- KEYS[5] events stream, KEYS[6] targets waiting for the in-flight cap (ZSET)
-- ARGV: target key, now (s), token ("" = any owner), expected states (comma separated),
--       new state, fields (JSON object merged into the record), event type ("" = none),
--       event data (JSON object), events max length, track completion ("1"/"0"),
--       lock action ("release", "refresh" or "keep"), lock ttl (s)
--
-- Returns {applied (1/0), state after the call, campaign finished by this call (1/0),
-- key of a waiting target to wake because this change freed an in-flight place ("" if none)}.
local key = ARGV[1]
local now = tonumber(ARGV[2])
local token = ARGV[3]
local expected = ARGV[4]
local new_state = ARGV[5]
local fields = cjson.decode(ARGV[6])
local event_type = ARGV[7]
local event_data = ARGV[8]
local events_max = tonumber(ARGV[9])
local track = ARGV[10] == "1"
local lock_action = ARGV[11]
local lock_ttl = tonumber(ARGV[12])

local raw = redis.call("HGET", KEYS[2], key)
if not raw then
  return {0, "missing", 0, ""}
end
local target = cjson.decode(raw)

local allowed = false
for state in string.gmatch(expected, "[^,]+") do
  if state == target.state then
    allowed = true
  end
end
if not allowed or (token ~= "" and target.token ~= token) then
  return {0, target.state, 0, ""}
end

local campaign_id = redis.call("HGET", KEYS[1], "id")
local old_state = target.state
for name, value in pairs(fields) do
  target[name] = value
end
target.state = new_state
target.updatedAt = now
redis.call("HSET", KEYS[2], key, cjson.encode(target))
if old_state ~= new_state then
  redis.call("HINCRBY", KEYS[3], old_state, -1)
  redis.call("HINCRBY", KEYS[3], new_state, 1)
end

local owner = campaign_id .. "|" .. key
local holder = redis.call("GET", KEYS[4])
if lock_action == "release" and holder == owner then
  redis.call("DEL", KEYS[4])
elseif lock_action == "refresh" then
  redis.call("SET", KEYS[4], owner, "EX", lock_ttl)
end

if event_type ~= "" then
  redis.call("XADD", KEYS[5], "MAXLEN", "~", events_max, "*", "type", event_type,
    "campaign_id", campaign_id, "data", event_data)
end

local function in_flight(state)
  return state == "submitting" or (track and state == "accepted")
end
local woken = ""
if in_flight(old_state) and not in_flight(new_state) then
  local popped = redis.call("ZPOPMIN", KEYS[6])
  if popped[1] then
    woken = popped[1]
  end
end

local function count(state)
  return tonumber(redis.call("HGET", KEYS[3], state) or "0")
end
local total = tonumber(redis.call("HGET", KEYS[1], "target_total") or "0")
local ended = count("synced") + count("sync_failed") + count("failed") + count("skipped")
if not track then
  ended = ended + count("accepted")
end
local campaign_state = redis.call("HGET", KEYS[1], "state")
local finished = 0
if redis.call("HGET", KEYS[1], "expanded") == "1" and ended >= total
    and campaign_state ~= "finished" and campaign_state ~= "cancelled" then
  redis.call("HSET", KEYS[1], "state", "finished", "finished_at", tostring(now))
  redis.call("XADD", KEYS[5], "MAXLEN", "~", events_max, "*", "type", "campaign.finished",
    "campaign_id", campaign_id, "data", cjson.encode({state = "finished"}))
  finished = 1
end
return {1, new_state, finished, woken}
