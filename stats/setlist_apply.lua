-- Applies a batch of performance events of one vertical, atomically.
-- KEYS[1..13] = perf, showplays, songplays, shows, showperfs, months, songs, bylast,
--               byfirst, win, vel, meta, bust  (stats/keys.py: VerticalKeys, same order)
-- ARGV[1]     = today: the date (YYYY-MM-DD) the caller's clock reads; ARGV[2] = the gap (days)
--               from which a play is indexed in `bust` (stats/keys.py: BUSTOUT_INDEX_DAYS)
-- ARGV[3..]   = 7 per event: op (R = recorded, X = retracted), performance_id,
--               version, song, show_id, show_date (YYYY-MM-DD), song_title
-- Returns {applied, stale}: events that changed the winner, events that lost to it.
--
-- Sorted-set scores are dates written as numbers (YYYYMMDD), readable in redis-cli;
-- day arithmetic uses day numbers (days since 1970-01-01) computed here.
--
-- Every read happens before the writes it decides, and no write can fail on valid
-- input, so an error never leaves half an event behind.

local K_PERF, K_SHOWPLAYS, K_SONGPLAYS, K_SHOWS, K_SHOWPERFS, K_MONTHS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local K_SONGS, K_BYLAST, K_BYFIRST, K_WIN, K_VEL, K_META = KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local K_BUST = KEYS[13]
local BUST_DAYS = tonumber(ARGV[2])

local SEP = '\31'
local WINDOWS = {30, 90, 365}

-- Byte order, whatever collation the server's locale has.
local function less(a, b)
  if a == b then return false end
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local function split(s)
  local out, start = {}, 1
  while true do
    local i = string.find(s, SEP, start, true)
    if not i then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
end

-- A batch holds a few dates many times over (a show's every play): each date is
-- converted once per call.
local days_of, ymds_of = {}, {}

-- Days since 1970-01-01 of a YYYY-MM-DD date (proleptic Gregorian).
local function compute_day(date)
  local y = tonumber(string.sub(date, 1, 4))
  local m = tonumber(string.sub(date, 6, 7))
  local d = tonumber(string.sub(date, 9, 10))
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function day_of(date)
  local d = days_of[date]
  if d == nil then
    d = compute_day(date)
    days_of[date] = d
  end
  return d
end

-- The YYYYMMDD score of a day number.
local function ymd_of_day(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y * 10000 + m * 100 + d
end

-- The YYYYMMDD score of a YYYY-MM-DD date.
local function ymd(date)
  local n = ymds_of[date]
  if n == nil then
    n = tonumber(string.sub(date, 1, 4) .. string.sub(date, 6, 7) .. string.sub(date, 9, 10))
    ymds_of[date] = n
  end
  return n
end

local touched = {}   -- song -> true: summary, windows and velocity to refresh
local wdelta = {}    -- song -> {d30, d90, d365}

local function bump(song, i, by)
  local d = wdelta[song]
  if not d then
    d = {0, 0, 0}
    wdelta[song] = d
  end
  d[i] = d[i] + by
  touched[song] = true
end

-- The clock: counters are kept for the latest day any caller has seen.
local now = day_of(ARGV[1])
local stored = redis.call('HGET', K_META, 'today')
local today = stored and day_of(stored) or nil

-- State kept in another layout is not extended: `statsworker rebuild` rewrites it.
local LAYOUT = '2'  -- stats/keys.py: SETLIST_LAYOUT
local layout = redis.call('HGET', K_META, 'layout')
if layout ~= LAYOUT and (stored or redis.call('EXISTS', K_PERF) == 1) then
  return redis.error_reply('STATELAYOUT ' .. (layout or '1') .. ' ' .. LAYOUT)
end

-- The plays of a show ('date\0show_id'): 'song\0performance_id' entries in byte order,
-- read once per call and kept sorted by binary insertion (O(log m) comparisons a change
-- for a show of m plays); `dirty` shows are written back at the end of the call.
local show_lists, dirty = {}, {}

local function show_list(show)
  local list = show_lists[show]
  if list == nil then
    list = {}
    local stored = redis.call('HGET', K_SHOWPLAYS, show)
    if stored then
      for entry in string.gmatch(stored, '[^\31]+') do list[#list + 1] = entry end
    end
    show_lists[show] = list
  end
  return list
end

-- The first index of `list` whose entry is not less than `entry`.
local function lower_bound(list, entry)
  local lo, hi = 1, #list + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if less(list[mid], entry) then lo = mid + 1 else hi = mid end
  end
  return lo
end

local function show_add(show, entry)
  local list = show_list(show)
  local at = lower_bound(list, entry)
  if list[at] ~= entry then table.insert(list, at, entry) end
  dirty[show] = true
end

local function show_remove(show, entry)
  local list = show_list(show)
  local at = lower_bound(list, entry)
  if list[at] == entry then table.remove(list, at) end
  dirty[show] = true
end

local function count_range(lo, hi, i, by)
  -- plays with lo < day <= hi move window i by `by`: the dates come from `shows`
  if hi <= lo then return end
  for _, show in ipairs(redis.call('ZRANGEBYSCORE', K_SHOWS, '(' .. ymd_of_day(lo), ymd_of_day(hi))) do
    for _, entry in ipairs(show_list(show)) do
      bump(string.sub(entry, 1, string.find(entry, '\0', 1, true) - 1), i, by)
    end
  end
end

if today == nil or now - today >= 365 then
  -- First use, or a jump of a year or more: recount the windows from the last year.
  redis.call('DEL', K_WIN, K_VEL)
  for _, song in ipairs(redis.call('ZRANGEBYSCORE', K_BYFIRST, '-inf', ymd_of_day(now))) do
    touched[song] = true
  end
  for i, w in ipairs(WINDOWS) do count_range(now - w, now, i, 1) end
  today = now
  redis.call('HSET', K_META, 'today', ARGV[1], 'layout', LAYOUT)
elseif now > today then
  -- Roll forward: plays leaving each window go out, plays reaching today come in.
  for i, w in ipairs(WINDOWS) do
    count_range(today - w, math.min(today, now - w), i, -1)
    count_range(math.max(today, now - w), now, i, 1)
  end
  today = now
  redis.call('HSET', K_META, 'today', ARGV[1])
end


-- Keep `bust` exact for the play `member` of `song`: indexed while its previous
-- play of the song lies at least BUST_DAYS earlier. `prev` is that previous play's
-- member when the caller knows it (false: there is none), nil to look it up;
-- `absent` says the play is known not to be indexed yet.
local function reindex(song, member, prev, absent)
  if prev == nil then
    prev = redis.call('ZREVRANGEBYLEX', K_SONGPLAYS, '(' .. member, '[' .. song .. '\0', 'LIMIT', 0, 1)[1] or false
  end
  local date = string.sub(member, #song + 2, #song + 11)
  local pid = string.sub(member, #song + 13)
  if prev and day_of(date) - day_of(string.sub(prev, #song + 2, #song + 11)) >= BUST_DAYS then
    redis.call('ZADD', K_BUST, ymd(date), pid)
  elseif not absent then
    redis.call('ZREM', K_BUST, pid)
  end
end

local function next_play(song, member)
  return redis.call('ZRANGEBYLEX', K_SONGPLAYS, '(' .. member, '(' .. song .. '\1', 'LIMIT', 0, 1)[1]
end

-- Show, month and year counters, and the shows' play lists, only change at the end of
-- the call, once each: nothing in between reads them from Redis.
local show_delta, show_score, month_delta = {}, {}, {}
local total_delta = 0

local function count_show(date, show_id, by)
  local show = date .. '\0' .. show_id
  show_delta[show] = (show_delta[show] or 0) + by
  show_score[show] = ymd(date)
  local p = 'p:' .. string.sub(date, 1, 7)
  month_delta[p] = (month_delta[p] or 0) + by
  total_delta = total_delta + by
  local y = 'y:' .. string.sub(date, 1, 4)
  month_delta[y] = (month_delta[y] or 0) + by
end

local function add_play(pid, song, show_id, date)
  local day = day_of(date)
  show_add(date .. '\0' .. show_id, song .. '\0' .. pid)
  local member = song .. '\0' .. date .. '\0' .. pid
  redis.call('ZADD', K_SONGPLAYS, 0, member)
  -- A play being added is not indexed: its earlier version was removed first.
  reindex(song, member, nil, true)
  local following = next_play(song, member)
  if following then reindex(song, following, member, false) end
  count_show(date, show_id, 1)
  for i, w in ipairs(WINDOWS) do
    if day > today - w and day <= today then bump(song, i, 1) end
  end
  touched[song] = true
end

local function remove_play(pid, song, show_id, date)
  local day = day_of(date)
  show_remove(date .. '\0' .. show_id, song .. '\0' .. pid)
  local member = song .. '\0' .. date .. '\0' .. pid
  local following = next_play(song, member)
  redis.call('ZREM', K_SONGPLAYS, member)
  redis.call('ZREM', K_BUST, pid)
  if following then reindex(song, following, nil, false) end
  count_show(date, show_id, -1)
  for i, w in ipairs(WINDOWS) do
    if day > today - w and day <= today then bump(song, i, -1) end
  end
  touched[song] = true
end

local function flush_counters()
  for show, by in pairs(show_delta) do
    if by ~= 0 then
      local after = redis.call('HINCRBY', K_SHOWPERFS, show, by)
      local before = after - by
      local s = 's:' .. string.sub(show, 1, 7)
      if after <= 0 then redis.call('HDEL', K_SHOWPERFS, show) end
      if before <= 0 and after > 0 then
        redis.call('ZADD', K_SHOWS, show_score[show], show)
        month_delta[s] = (month_delta[s] or 0) + 1
      elseif before > 0 and after <= 0 then
        redis.call('ZREM', K_SHOWS, show)
        month_delta[s] = (month_delta[s] or 0) - 1
      end
    end
  end
  for field, by in pairs(month_delta) do
    if by ~= 0 and redis.call('HINCRBY', K_MONTHS, field, by) <= 0 then
      redis.call('HDEL', K_MONTHS, field)
    end
  end
  if total_delta ~= 0 and redis.call('HINCRBY', K_META, 'plays', total_delta) <= 0 then
    redis.call('HDEL', K_META, 'plays')
  end
  for show in pairs(dirty) do
    local list = show_lists[show]
    if #list == 0 then
      redis.call('HDEL', K_SHOWPLAYS, show)
    else
      redis.call('HSET', K_SHOWPLAYS, show, table.concat(list, SEP))
    end
  end
end

local applied, stale = 0, 0
for base = 3, #ARGV, 7 do
  local op, pid, version = ARGV[base], ARGV[base + 1], ARGV[base + 2]
  local old = redis.call('HGET', K_PERF, pid)
  local oldrec = old and split(old) or nil
  if oldrec and not less(oldrec[1], version) then
    stale = stale + 1
  else
    applied = applied + 1
    if oldrec and oldrec[2] == 'R' then remove_play(pid, oldrec[3], oldrec[4], oldrec[5]) end
    if op == 'R' then
      local song, show_id, date, title = ARGV[base + 3], ARGV[base + 4], ARGV[base + 5], ARGV[base + 6]
      redis.call('HSET', K_PERF, pid, table.concat({version, 'R', song, show_id, date, title}, SEP))
      add_play(pid, song, show_id, date)
    else
      redis.call('HSET', K_PERF, pid, version .. SEP .. 'X')
    end
  end
end

flush_counters()

-- Refresh what depends on a song's whole history: totals, first and last play,
-- title (that of the latest play), windows and velocity.
for song in pairs(touched) do
  local lo, hi = '[' .. song .. '\0', '(' .. song .. '\1'
  local n = redis.call('ZLEXCOUNT', K_SONGPLAYS, lo, hi)
  if n == 0 then
    redis.call('HDEL', K_SONGS, song)
    redis.call('HDEL', K_WIN, song)
    redis.call('ZREM', K_BYLAST, song)
    redis.call('ZREM', K_BYFIRST, song)
    redis.call('ZREM', K_VEL, song)
  else
    local first = redis.call('ZRANGEBYLEX', K_SONGPLAYS, lo, hi, 'LIMIT', 0, 1)[1]
    local last = redis.call('ZREVRANGEBYLEX', K_SONGPLAYS, hi, lo, 'LIMIT', 0, 1)[1]
    local firstdate = string.sub(first, #song + 2, #song + 11)
    local firstday = day_of(firstdate)
    local title = split(redis.call('HGET', K_PERF, string.sub(last, #song + 13)))[6]
    redis.call('HSET', K_SONGS, song, n .. SEP .. title)
    redis.call('ZADD', K_BYLAST, ymd(string.sub(last, #song + 2, #song + 11)), song)
    redis.call('ZADD', K_BYFIRST, ymd(firstdate), song)
    local w = {0, 0, 0}
    local cur = redis.call('HGET', K_WIN, song)
    if cur then
      local p = split(cur)
      w = {tonumber(p[1]), tonumber(p[2]), tonumber(p[3])}
    end
    local d = wdelta[song]
    if d then
      w = {w[1] + d[1], w[2] + d[2], w[3] + d[3]}
      if w[1] == 0 and w[2] == 0 and w[3] == 0 then
        redis.call('HDEL', K_WIN, song)
      else
        redis.call('HSET', K_WIN, song, w[1] .. SEP .. w[2] .. SEP .. w[3])
      end
    end
    if firstday <= today then
      redis.call('ZADD', K_VEL, 0 - (3 * w[1] + 2 * w[2] + w[3]), song)
    else
      redis.call('ZREM', K_VEL, song)
    end
  end
end

return {applied, stale}
