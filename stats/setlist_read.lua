-- Answers one setlist read from one consistent view of a vertical's state.
-- KEYS[1..13] = perf, plays, songplays, shows, showperfs, months, songs, bylast,
--               byfirst, win, vel, meta, bust  (stats/keys.py: VerticalKeys, same order)
-- ARGV[1] = read: song | gaps | velocity | trends | stats | bustouts | debuts
-- ARGV[2] = as_of date (YYYY-MM-DD), ARGV[3] = as_of as a YYYYMMDD number (the score form)
-- ARGV[4..] = the read's parameters (see each branch below)
-- Returns false when the vertical has no state; otherwise a flat array whose layout
-- each branch documents. Scores (dates as YYYYMMDD numbers) are returned as numbers.

local K_PERF, K_PLAYS, K_SONGPLAYS, K_SHOWS, K_MONTHS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[6]
local K_SONGS, K_BYLAST, K_BYFIRST, K_WIN, K_VEL, K_META = KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local K_BUST = KEYS[13]

local SEP = '\31'

if redis.call('EXISTS', K_PERF) == 0 then return false end

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

local function ymd(date)
  return tonumber(string.sub(date, 1, 4) .. string.sub(date, 6, 7) .. string.sub(date, 9, 10))
end

local function day_of(date)
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

local read, asof, asofday = ARGV[1], ARGV[2], tonumber(ARGV[3])  -- asofday: YYYYMMDD

local function title_of(song)
  local s = redis.call('HGET', K_SONGS, song)
  return s and split(s)[2] or song
end

-- Plays of `song` dated after `after` (a date, or nil) up to as_of.
local function plays_upto(song, after)
  local lo = after and ('(' .. song .. '\0' .. after .. '\1') or ('[' .. song .. '\0')
  return redis.call('ZLEXCOUNT', K_SONGPLAYS, lo, '(' .. song .. '\0' .. asof .. '\1')
end

-- The latest play of `song` on or before as_of: date, performance_id.
local function last_upto(song)
  local m = redis.call('ZREVRANGEBYLEX', K_SONGPLAYS, '(' .. song .. '\0' .. asof .. '\1',
    '[' .. song .. '\0', 'LIMIT', 0, 1)[1]
  if not m then return nil end
  return string.sub(m, #song + 2, #song + 11), string.sub(m, #song + 13)
end

local function first_play(song)
  local m = redis.call('ZRANGEBYLEX', K_SONGPLAYS, '[' .. song .. '\0', '(' .. song .. '\1',
    'LIMIT', 0, 1)[1]
  return string.sub(m, #song + 2, #song + 11), string.sub(m, #song + 13)
end

local function shows_between(lo, hi)
  -- shows dated lo < d <= hi (YYYYMMDD)
  return redis.call('ZCOUNT', K_SHOWS, '(' .. lo, hi)
end

local function show_id_of(pid)
  return split(redis.call('HGET', K_PERF, pid))[4]
end

if read == 'song' then
  -- ARGV[4] = song, ARGV[5..7] = dates as_of-30, as_of-90, as_of-365
  -- -> {title, total, first_date, last_date, shows_since, p30, p90, p365} or {}
  local song = ARGV[4]
  local total = plays_upto(song, nil)
  if total == 0 then return {} end
  local last = last_upto(song)
  local first = first_play(song)
  return {title_of(song), total, first, last, shows_between(ymd(last), asofday),
          plays_upto(song, ARGV[5]), plays_upto(song, ARGV[6]), plays_upto(song, ARGV[7])}

elseif read == 'gaps' then
  -- ARGV[4] = min_plays, ARGV[5] = limit
  -- -> 6 per row: song, title, last play, total, first play (YYYYMMDD), shows_since
  local min_plays, limit = math.max(tonumber(ARGV[4]), 1), tonumber(ARGV[5])
  local rows = {}
  local newest = redis.call('ZRANGE', K_PLAYS, -1, -1, 'WITHSCORES')[2]
  if newest == nil or tonumber(newest) <= asofday then
    -- Every play counts: walk songs by last play, oldest first.
    local start = 0
    local step = math.min(200, limit * 2)
    while #rows < limit do
      local batch = redis.call('ZRANGE', K_BYLAST, start, start + step - 1, 'WITHSCORES')
      if #batch == 0 then break end
      for i = 1, #batch, 2 do
        local song = batch[i]
        local s = split(redis.call('HGET', K_SONGS, song))
        local total = tonumber(s[1])
        if total >= min_plays then
          rows[#rows + 1] = {song, s[2], tonumber(batch[i + 1]), total,
                             tonumber(redis.call('ZSCORE', K_BYFIRST, song))}
          if #rows == limit then break end
        end
      end
      start = start + step
    end
  else
    -- Plays after as_of exist: each song's figures as of that date, then sort.
    local cand = {}
    for _, song in ipairs(redis.call('ZRANGEBYSCORE', K_BYFIRST, '-inf', asofday)) do
      local total = plays_upto(song, nil)
      if total >= min_plays then
        local last = last_upto(song)
        cand[#cand + 1] = {song, title_of(song), ymd(last), total,
                           tonumber(redis.call('ZSCORE', K_BYFIRST, song))}
      end
    end
    table.sort(cand, function(a, b)
      if a[3] ~= b[3] then return a[3] < b[3] end
      return less(a[1], b[1])
    end)
    for i = 1, math.min(limit, #cand) do rows[i] = cand[i] end
  end
  local out = {}
  for _, r in ipairs(rows) do
    for _, v in ipairs({r[1], r[2], r[3], r[4], r[5], shows_between(r[3], asofday)}) do
      out[#out + 1] = v
    end
  end
  return out

elseif read == 'velocity' then
  -- ARGV[4] = limit, ARGV[5..7] = dates as_of-30, as_of-90, as_of-365
  -- -> 6 per row: song, title, p30, p90, p365, total
  local limit = tonumber(ARGV[4])
  local rows = {}
  if redis.call('HGET', K_META, 'today') == asof then
    -- Counters are kept for this very day: the ranking is stored.
    local ranked = redis.call('ZRANGE', K_VEL, 0, limit - 1)
    for _, song in ipairs(ranked) do
      local w = {0, 0, 0}
      local cur = redis.call('HGET', K_WIN, song)
      if cur then
        local p = split(cur)
        w = {tonumber(p[1]), tonumber(p[2]), tonumber(p[3])}
      end
      rows[#rows + 1] = {song, title_of(song), w[1], w[2], w[3], plays_upto(song, nil)}
    end
  else
    local cand = {}
    for _, song in ipairs(redis.call('ZRANGEBYSCORE', K_BYFIRST, '-inf', asofday)) do
      local p30, p90, p365 = plays_upto(song, ARGV[5]), plays_upto(song, ARGV[6]), plays_upto(song, ARGV[7])
      cand[#cand + 1] = {song, nil, p30, p90, p365, 0, 3 * p30 + 2 * p90 + p365}
    end
    table.sort(cand, function(a, b)
      if a[7] ~= b[7] then return a[7] > b[7] end
      return less(a[1], b[1])
    end)
    for i = 1, math.min(limit, #cand) do
      local r = cand[i]
      rows[i] = {r[1], title_of(r[1]), r[3], r[4], r[5], plays_upto(r[1], nil)}
    end
  end
  local out = {}
  for _, r in ipairs(rows) do
    for j = 1, 6 do out[#out + 1] = r[j] end
  end
  return out

elseif read == 'trends' then
  -- ARGV[4] = the first day of as_of's month (YYYYMMDD)
  -- -> {performances in as_of's month up to as_of, shows likewise, month fields...}
  local from = tonumber(ARGV[4])
  local out = {redis.call('ZCOUNT', K_PLAYS, from, asofday), redis.call('ZCOUNT', K_SHOWS, from, asofday)}
  for _, v in ipairs(redis.call('HGETALL', K_MONTHS)) do out[#out + 1] = v end
  return out

elseif read == 'stats' then
  -- -> {shows, performances, songs played, songs known, first show, last show (YYYYMMDD)}
  local first = redis.call('ZRANGEBYSCORE', K_SHOWS, '-inf', asofday, 'WITHSCORES', 'LIMIT', 0, 1)[2]
  local last = redis.call('ZREVRANGEBYSCORE', K_SHOWS, asofday, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)[2]
  return {redis.call('ZCOUNT', K_SHOWS, '-inf', asofday), redis.call('ZCOUNT', K_PLAYS, '-inf', asofday),
          redis.call('ZCOUNT', K_BYFIRST, '-inf', asofday), redis.call('HLEN', K_SONGS),
          first or false, last or false}

elseif read == 'bustouts' then
  -- ARGV[4] = as_of - days (YYYYMMDD, excluded), ARGV[5] = gap_threshold,
  -- ARGV[6] = gap_shows_threshold (0: none), ARGV[7] = the gap from which plays are
  -- indexed in `bust`
  -- -> 8 per row: song, title, date, show_id, gap_days, gap_shows, previous date, pid
  local from, gap_min, shows_min = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
  -- Indexed candidates when the threshold allows, else every play of the window.
  local source = gap_min >= tonumber(ARGV[7]) and K_BUST or K_PLAYS
  local out = {}
  for _, pid in ipairs(redis.call('ZRANGEBYSCORE', source, '(' .. from, asofday)) do
    local rec = split(redis.call('HGET', K_PERF, pid))
    local song, date = rec[3], rec[5]
    local prev = redis.call('ZREVRANGEBYLEX', K_SONGPLAYS, '(' .. song .. '\0' .. date .. '\0' .. pid,
      '[' .. song .. '\0', 'LIMIT', 0, 1)[1]
    if prev then
      local prevdate = string.sub(prev, #song + 2, #song + 11)
      local gap = day_of(date) - day_of(prevdate)
      if gap >= gap_min then
        local gap_shows = shows_between(ymd(prevdate), ymd(date))
        if gap_shows >= shows_min then
          for _, v in ipairs({song, title_of(song), date, rec[4], gap, gap_shows, prevdate, pid}) do
            out[#out + 1] = v
          end
        end
      end
    end
  end
  return out

elseif read == 'debuts' then
  -- ARGV[4] = as_of - days (YYYYMMDD, excluded)
  -- -> 5 per row: song, title, debut (YYYYMMDD), show_id, plays up to as_of
  local out = {}
  local found = redis.call('ZRANGEBYSCORE', K_BYFIRST, '(' .. ARGV[4], asofday, 'WITHSCORES')
  for i = 1, #found, 2 do
    local song = found[i]
    local _, pid = first_play(song)
    for _, v in ipairs({song, title_of(song), tonumber(found[i + 1]), show_id_of(pid), plays_upto(song, nil)}) do
      out[#out + 1] = v
    end
  end
  return out
end

return redis.error_reply('unknown read ' .. tostring(read))
