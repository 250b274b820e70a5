-- Adaptive GCRA rate limiter for one bucket, run atomically by Redis.
--
-- KEYS[1]  the bucket hash (cce-sync:ratelimit:{bucket})
-- ARGV[1]  operation: "acquire", "throttled" or "success"
-- ARGV[2]  current time in seconds, or "" to read the Redis server's clock (TIME)
-- ARGV[3]  configured ceiling, requests per second (> 0)
-- ARGV[4]  acquire: max wait in seconds; throttled: Retry-After in seconds or ""; success: ""
-- ARGV[5]  burst: requests that may be granted at once after an idle period (>= 1)
-- ARGV[6]  decrease factor applied to the rate on a 429 (0 < f < 1)
-- ARGV[7]  minimum rate in requests per second
-- ARGV[8]  recovery: fraction of the ceiling regained per second of success
-- ARGV[9]  hold after the first 429 without Retry-After, in seconds (doubles per strike)
-- ARGV[10] maximum hold in seconds
-- ARGV[11] seconds after a decrease during which further 429s do not decrease again
-- ARGV[12] seconds an untouched bucket is kept
-- ARGV[13] throttled: the limit the gateway stated in its 429, requests per second, or ""
-- ARGV[14] seconds a stated limit caps the rate
--
-- Hash fields, all in seconds of the same clock:
--   tat           GCRA theoretical arrival time: the next free slot is tat - (burst - 1) * interval
--   factor        current rate / ceiling, in (0, 1]; absent means 1
--   hold_until    no recovery before this time
--   last_decrease time of the last multiplicative decrease
--   last_increase time up to which recovery has been credited
--   strikes       decreases since the rate was last back at the ceiling
--   cap           highest factor allowed, from a limit the gateway stated; absent means 1
--   cap_until     time after which the stated limit no longer caps the rate
--
-- Returns (numbers as strings, because Redis truncates Lua numbers to integers):
--   acquire:             {granted 0|1, wait seconds, rate per second, now}
--   throttled / success: {rate per second, now}

local key = KEYS[1]
local operation = ARGV[1]

local now
if ARGV[2] == "" then
    local time = redis.call("TIME")
    now = tonumber(time[1]) + tonumber(time[2]) / 1000000
else
    now = tonumber(ARGV[2])
end

local ceiling = tonumber(ARGV[3])
local burst = tonumber(ARGV[5])
local decrease_factor = tonumber(ARGV[6])
local min_rate = tonumber(ARGV[7])
local recovery_per_second = tonumber(ARGV[8])
local base_hold = tonumber(ARGV[9])
local max_hold = tonumber(ARGV[10])
local decrease_interval = tonumber(ARGV[11])
local idle_expiry = tonumber(ARGV[12])
local stated_limit = tonumber(ARGV[13] or "")
local cap_seconds = tonumber(ARGV[14] or "") or 0

local function fmt(value)
    return string.format("%.6f", value)
end

local stored = redis.call(
    "HMGET", key, "tat", "factor", "hold_until", "last_decrease", "last_increase", "strikes",
    "cap", "cap_until"
)
local tat = tonumber(stored[1]) or 0
local factor = tonumber(stored[2]) or 1
local hold_until = tonumber(stored[3]) or 0
local last_decrease = tonumber(stored[4])
local last_increase = tonumber(stored[5])
local strikes = tonumber(stored[6]) or 0
local cap = tonumber(stored[7]) or 1
local cap_until = tonumber(stored[8]) or 0
if now >= cap_until then
    cap = 1
end

local function save()
    redis.call(
        "HSET", key,
        "tat", fmt(tat),
        "factor", string.format("%.9f", factor),
        "hold_until", fmt(hold_until),
        "last_decrease", fmt(last_decrease or 0),
        "last_increase", fmt(last_increase or now),
        "strikes", tostring(strikes),
        "cap", string.format("%.9f", cap),
        "cap_until", fmt(cap_until)
    )
    -- Keep the key at least as long as a reservation or a hold reaches into the future.
    local keep = math.max(idle_expiry, tat - now, hold_until - now) + 1
    redis.call("PEXPIRE", key, math.ceil(keep * 1000))
end

if operation == "acquire" then
    local max_wait = tonumber(ARGV[4])
    local interval = 1 / (ceiling * factor)
    local start = math.max(tat, now)
    local slot = math.max(now, start - (burst - 1) * interval)
    local wait = slot - now
    if wait > max_wait then
        -- Nothing is reserved; the reply is the time until the next free slot.
        return {0, fmt(wait), fmt(ceiling * factor), fmt(now)}
    end
    tat = start + interval
    save()
    return {1, fmt(wait), fmt(ceiling * factor), fmt(now)}
end

if operation == "throttled" then
    local retry_after = tonumber(ARGV[4])
    local floor_factor = math.min(1, min_rate / ceiling)

    -- 429s from requests that were already in flight when the rate was cut describe the old
    -- rate, so only the first one within decrease_interval cuts it.
    if last_decrease == nil or now >= last_decrease + decrease_interval then
        factor = math.max(floor_factor, factor * decrease_factor)
        strikes = strikes + 1
        last_decrease = now
    end

    -- A gateway that states its limit ("limit:8, time:1 second") is taken at its word: the
    -- rate goes straight to just below it and recovers no higher while the cap lasts.
    if stated_limit ~= nil and stated_limit > 0 then
        cap = math.max(floor_factor, math.min(1, stated_limit / ceiling))
        cap_until = now + cap_seconds
        factor = math.min(factor, cap)
    end

    local interval = 1 / (ceiling * factor)
    local hold
    local pause
    if retry_after ~= nil then
        hold = retry_after
        pause = retry_after
    else
        hold = math.min(max_hold, base_hold * 2 ^ (math.max(strikes, 1) - 1))
        pause = interval
    end

    hold_until = math.max(hold_until, now + hold)
    last_increase = hold_until
    -- No slot is granted before now + pause.
    tat = math.max(tat, now + pause + (burst - 1) * interval)
    save()
    return {fmt(ceiling * factor), fmt(now)}
end

if operation == "success" then
    if factor >= cap or now < hold_until then
        return {fmt(ceiling * factor), fmt(now)}
    end

    local credited_from = math.max(last_increase or now, hold_until)
    -- One success credits at most one second, however long ago the last credit was, so a
    -- bucket that was idle (or runs below one request per second) recovers gradually.
    local credited = math.min(now - credited_from, 1)
    if credited > 0 then
        factor = math.min(cap, factor + recovery_per_second * credited)
        last_increase = now
        if factor >= 1 then
            strikes = 0
        end
        save()
    end
    return {fmt(ceiling * factor), fmt(now)}
end

return redis.error_reply("unknown rate limiter operation: " .. tostring(operation))
