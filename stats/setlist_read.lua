-- Answers one setlist read from one consistent view of a vertical's state.
-- KEYS    = the vertical's keys (setlist_lib.lua; stats/keys.py: VerticalKeys)
-- ARGV[1] = read: song | gaps | velocity | trends | stats | bustouts | debuts
-- ARGV[2] = as_of date (YYYY-MM-DD), ARGV[3] = as_of as a YYYYMMDD number (the score form)
-- ARGV[4..] = the read's parameters (see each branch below)
-- Returns false when the vertical has no state; otherwise a flat array whose layout
-- each branch documents. Scores (dates as YYYYMMDD numbers) are returned as numbers or
-- as their digits.
--
-- A score that only passes from one command to the next, or back to the caller, stays
-- the text Redis gave: turning it into a Lua number and back (strtod, then printf)
-- cost more than the command itself.

-- include: setlist_lib

if redis.call('EXISTS', K_PERF) == 0 then return false end

local layout = redis.call('HGET', K_META, 'layout')
if layout ~= LAYOUT then return redis.error_reply('STATELAYOUT ' .. (layout or '1') .. ' ' .. LAYOUT) end

local read, asof, asofday = ARGV[1], ARGV[2], tonumber(ARGV[3])  -- asofday: YYYYMMDD
local asof_digits = ARGV[3]  -- the same, as the text a command takes

-- 'total\31title' of the songs hash: total plays (all dates) and title.
local function total_title(rec)
  local i = string.find(rec, SEP, 1, true)
  return tonumber(string.sub(rec, 1, i - 1)), string.sub(rec, i + 1)
end

-- The title of the song's latest play on or before as_of, which is dated `last` (the
-- greatest performance_id of that day). `songs` holds the latest play's title over all
-- dates, which is this one when no play is dated after as_of.
local function title_upto(song, last)
  local _, _, hi, _, title = plays_on(song, last)
  if hi == nil then return song end
  if title == '' then return redis.call('HGET', K_TITLES, song) or song end
  return title
end

-- HMGET of many fields, in slices that stay within Lua's stack for unpack.
local function hmget(key, fields)
  local out = {}
  for lo = 1, #fields, 1000 do
    local got = redis.call('HMGET', key, unpack(fields, lo, math.min(lo + 999, #fields)))
    for i = 1, #got do out[#out + 1] = got[i] end
  end
  return out
end

-- True when no play is dated after as_of: then every stored total is the total as of
-- as_of, and bylast/byfirst hold each song's last and first play.
local function nothing_after()
  local newest = redis.call('ZRANGE', K_SHOWS, -1, -1, 'WITHSCORES')[2]  -- a show has >= 1 play
  return newest == nil or tonumber(newest) <= asofday
end

-- Performances of the shows dated lo <= date <= hi (YYYYMMDD): one month at most.
local function perfs_between(lo, hi)
  local shows = redis.call('ZRANGEBYSCORE', K_SHOWS, lo, hi)
  local n = 0
  for _, plays in ipairs(hmget(K_SHOWPLAYS, shows)) do
    local at = 0
    repeat  -- entries are joined by \31: one more than the separators
      n = n + 1
      at = find(plays, SEP, at + 1, true)
    until not at
  end
  return n
end

-- Performances dated on or before as_of: whole years and months from `months`, then
-- the shows of as_of's month (at most 200 + 11 fields and one month of shows).
local function perfs_upto()
  local y, m = math.floor(asofday / 10000), math.floor(asofday / 100) % 100
  local fields = {}
  for year = 1900, y - 1 do fields[#fields + 1] = 'y:' .. year end
  for month = 1, m - 1 do fields[#fields + 1] = string.format('p:%04d-%02d', y, month) end
  local n = 0
  for _, v in ipairs(hmget(K_MONTHS, fields)) do
    if v then n = n + tonumber(v) end
  end
  return n + perfs_between(y * 10000 + m * 100 + 1, asofday)
end

-- Plays of `song` dated after `after` (a date, or nil) up to as_of.
local function plays_upto(song, after)
  return count_upto(song, asof) - (after and count_upto(song, after) or 0)
end

-- The latest play date of `song` on or before as_of.
local function last_upto(song)
  return play_before(song, asof, true)
end

local function shows_between(lo, hi)
  -- shows dated lo < d <= hi (YYYYMMDD, numbers or their digits)
  return redis.call('ZCOUNT', K_SHOWS, '(' .. lo, hi)
end

-- The counters in `win` as of the day in meta (0, 0, 0 when the song has none).
local function windows(rec)
  if not rec then return 0, 0, 0 end
  local a, b, c = string.match(rec, '^(%d+)\31(%d+)\31(%d+)')
  return tonumber(a), tonumber(b), tonumber(c)
end

if read == 'song' then
  -- ARGV[4] = song, ARGV[5..7] = dates as_of-30, as_of-90, as_of-365
  -- -> {title, total, first, last (YYYYMMDD), shows_since, p30, p90, p365} or {}
  local song = ARGV[4]
  local title, total, first, last
  if nothing_after() then
    local rec = redis.call('HGET', K_SONGS, song)
    if not rec then return {} end
    total, title = total_title(rec)
    first = redis.call('ZSCORE', K_BYFIRST, song)
    last = redis.call('ZSCORE', K_BYLAST, song)
  else
    total = plays_upto(song, nil)
    if total == 0 then return {} end
    local lastdate = last_upto(song)
    title = title_upto(song, lastdate)
    first = ymd(first_date(song))
    last = ymd(lastdate)
  end
  local p30, p90, p365
  if redis.call('HGET', K_META, 'today') == asof then
    p30, p90, p365 = windows(redis.call('HGET', K_WIN, song))
  else
    p30, p90, p365 = plays_upto(song, ARGV[5]), plays_upto(song, ARGV[6]), plays_upto(song, ARGV[7])
  end
  return {title, total, first, last, shows_between(last, asof_digits), p30, p90, p365}

elseif read == 'gaps' then
  -- ARGV[4] = min_plays, ARGV[5] = limit
  -- -> 6 per row: song, title, last play, total, first play (YYYYMMDD), shows_since
  local min_plays, limit = math.max(tonumber(ARGV[4]), 1), tonumber(ARGV[5])
  local rows = {}
  if nothing_after() then
    -- Every play counts: walk songs by last play, oldest first.
    local start = 0
    local step = math.min(200, limit * 2)
    while #rows < limit do
      -- Every element a call hands to Lua costs; scores are read for the rows only.
      local names = redis.call('ZRANGE', K_BYLAST, start, start + step - 1)
      if #names == 0 then break end
      local recs = redis.call('HMGET', K_SONGS, unpack(names))
      for j = 1, #names do
        local total, title = total_title(recs[j])
        if total >= min_plays then
          rows[#rows + 1] = {names[j], title, false, total}
          if #rows == limit then break end
        end
      end
      start = start + step
    end
    if #rows > 0 then
      local songs = {}
      for i, r in ipairs(rows) do songs[i] = r[1] end
      local lasts = redis.call('ZMSCORE', K_BYLAST, unpack(songs))
      local firsts = redis.call('ZMSCORE', K_BYFIRST, unpack(songs))
      for i, r in ipairs(rows) do r[3], r[5] = lasts[i], firsts[i] end
    end
  else
    -- Plays after as_of exist: each song's figures as of that date, then sort.
    local cand = {}
    for _, song in ipairs(redis.call('ZRANGEBYSCORE', K_BYFIRST, '-inf', asofday)) do
      local total = plays_upto(song, nil)
      if total >= min_plays then
        local last = last_upto(song)
        cand[#cand + 1] = {song, title_upto(song, last), ymd(last), total,
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
  local since_of, since = nil, 0  -- rows come by last play: equal dates are neighbours
  for _, r in ipairs(rows) do
    if r[3] ~= since_of then since_of, since = r[3], shows_between(r[3], asof_digits) end
    for _, v in ipairs({r[1], r[2], r[3], r[4], r[5], since}) do
      out[#out + 1] = v
    end
  end
  return out

elseif read == 'velocity' then
  -- ARGV[4] = limit, ARGV[5..7] = dates as_of-30, as_of-90, as_of-365
  -- -> 6 per row: song, title, p30, p90, p365, total
  local limit = tonumber(ARGV[4])
  local out = {}
  if redis.call('HGET', K_META, 'today') == asof then
    -- Counters are kept for this very day: the ranking is stored.
    local ranked = redis.call('ZRANGE', K_VEL, 0, limit - 1)
    if #ranked == 0 then return out end
    local wins = redis.call('HMGET', K_WIN, unpack(ranked))
    local recs = redis.call('HMGET', K_SONGS, unpack(ranked))
    local exact = nothing_after()
    for i, song in ipairs(ranked) do
      local p30, p90, p365 = windows(wins[i])
      local total, title
      if recs[i] then total, title = total_title(recs[i]) else title = song end
      if not (exact and recs[i]) then
        total = plays_upto(song, nil)
        title = title_upto(song, last_upto(song))
      end
      for _, v in ipairs({song, title, p30, p90, p365, total}) do out[#out + 1] = v end
    end
    return out
  end
  local cand = {}
  for _, song in ipairs(redis.call('ZRANGEBYSCORE', K_BYFIRST, '-inf', asofday)) do
    local p30, p90, p365 = plays_upto(song, ARGV[5]), plays_upto(song, ARGV[6]), plays_upto(song, ARGV[7])
    cand[#cand + 1] = {song, p30, p90, p365, 3 * p30 + 2 * p90 + p365}
  end
  table.sort(cand, function(a, b)
    if a[5] ~= b[5] then return a[5] > b[5] end
    return less(a[1], b[1])
  end)
  for i = 1, math.min(limit, #cand) do
    local r = cand[i]
    for _, v in ipairs({r[1], title_upto(r[1], last_upto(r[1])), r[2], r[3], r[4], plays_upto(r[1], nil)}) do
      out[#out + 1] = v
    end
  end
  return out

elseif read == 'trends' then
  -- ARGV[4] = the first day of as_of's month (YYYYMMDD)
  -- -> {the lines of `trend` for the months before as_of's, as_of's month's shows and
  --    performances up to as_of}; later months count not at all
  local from = tonumber(ARGV[4])
  local trend = redis.call('GET', K_TREND) or ''
  local cut = (search(trend, TREND_WIDTH, math.floor(from / 100), false, 6) - 1) * TREND_WIDTH
  local shows_now = redis.call('ZCOUNT', K_SHOWS, from, asofday)
  return {sub(trend, 1, cut), shows_now, shows_now > 0 and perfs_between(from, asofday) or 0}

elseif read == 'stats' then
  -- -> {shows, performances, songs played, first show, last show (YYYYMMDD)}
  local first = redis.call('ZRANGEBYSCORE', K_SHOWS, '-inf', asofday, 'WITHSCORES', 'LIMIT', 0, 1)[2]
  local last = redis.call('ZREVRANGEBYSCORE', K_SHOWS, asofday, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)[2]
  local perfs = nothing_after() and tonumber(redis.call('HGET', K_META, 'plays') or 0) or perfs_upto()
  return {redis.call('ZCOUNT', K_SHOWS, '-inf', asofday), perfs,
          redis.call('ZCOUNT', K_BYFIRST, '-inf', asofday), first or false, last or false}

elseif read == 'bustouts' then
  -- ARGV[4] = as_of - days (YYYYMMDD, excluded), ARGV[5] = gap_threshold,
  -- ARGV[6] = gap_shows_threshold (0: none), ARGV[7] = the gap from which plays are
  -- indexed in `bust`
  -- -> 8 per row: song, title, date, show_id, gap_days, gap_shows, previous date, pid
  local from, gap_min, shows_min = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
  -- Candidates {song, show_id, pid, date, previous play's date}: the indexed plays when
  -- the threshold allows, else every play of the window.
  local cands = {}
  if gap_min >= tonumber(ARGV[7]) then
    local found = redis.call('ZRANGEBYSCORE', K_BUST, '(' .. from, asof_digits, 'WITHSCORES')
    for i = 1, #found, 2 do
      local score = found[i + 1]  -- the date's 8 digits
      local song, show_id, pid, prev = bust_parts(found[i])
      local date = sub(score, 1, 4) .. '-' .. sub(score, 5, 6) .. '-' .. sub(score, 7, 8)
      ymd_texts[date] = score
      cands[#cands + 1] = {song, show_id, pid, date, prev}
    end
  else
    -- Plays of one song on one day, by performance_id: the first one's previous play
    -- lies on an earlier day, each other's on the same day.
    local shows = redis.call('ZRANGEBYSCORE', K_SHOWS, '(' .. from, asof_digits)
    local groups, order = {}, {}
    for i, entries in ipairs(hmget(K_SHOWPLAYS, shows)) do
      local date, show_id = sub(shows[i], 1, 10), sub(shows[i], 12)
      for entry in string.gmatch(entries, '[^\31]+') do
        local z = find(entry, '\0', 1, true)
        local song = sub(entry, 1, z - 1)
        local group = song .. '\0' .. date
        local plays = groups[group]
        if not plays then
          plays = {}
          groups[group] = plays
          order[#order + 1] = {song, date, plays}
        end
        plays[#plays + 1] = {sub(entry, z + 1, find(entry, '\0', z + 1, true) - 1), show_id}
      end
    end
    for _, g in ipairs(order) do
      local song, date, plays = g[1], g[2], g[3]
      table.sort(plays, function(x, y) return less(x[1], y[1]) end)
      for j, play in ipairs(plays) do
        local prev = date
        if j == 1 then prev = play_before(song, date, false) end
        cands[#cands + 1] = {song, play[2], play[1], date, prev}
      end
    end
  end
  local rows, songs, seen = {}, {}, {}
  for _, c in ipairs(cands) do
    local song, date, prevdate = c[1], c[4], c[5]
    if prevdate then
      local gap = day_of(date) - day_of(prevdate)
      if gap >= gap_min then
        local gap_shows = shows_between(ymd_text(prevdate), ymd_text(date))
        if gap_shows >= shows_min then
          rows[#rows + 1] = {song, false, date, c[2], gap, gap_shows, prevdate, c[3]}
          if not seen[song] then
            seen[song] = true
            songs[#songs + 1] = song
          end
        end
      end
    end
  end
  local titles = {}
  local got = hmget(K_SONGS, songs)
  local exact = nothing_after()
  for i, song in ipairs(songs) do
    titles[song] = song
    if not exact then
      titles[song] = title_upto(song, last_upto(song))
    elseif got[i] then
      local _, title = total_title(got[i])
      titles[song] = title
    end
  end
  local out = {}
  for _, r in ipairs(rows) do
    r[2] = titles[r[1]]
    for j = 1, 8 do out[#out + 1] = r[j] end
  end
  return out

elseif read == 'debuts' then
  -- ARGV[4] = as_of - days (YYYYMMDD, excluded)
  -- -> 5 per row: song, title, debut (YYYYMMDD), show_id of the first play, plays up to as_of
  local out = {}
  local found = redis.call('ZRANGEBYSCORE', K_BYFIRST, '(' .. ARGV[4], asofday, 'WITHSCORES')
  if #found == 0 then return out end
  local songs = {}
  for i = 1, #found, 2 do songs[#songs + 1] = found[i] end
  local recs = hmget(K_SONGS, songs)
  local exact = nothing_after()
  for i, song in ipairs(songs) do
    local _, show = plays_on(song, first_date(song))
    local total, title = total_title(recs[i])
    if not exact then
      total = plays_upto(song, nil)
      title = title_upto(song, last_upto(song))
    end
    for _, v in ipairs({song, title, found[2 * i], sub(show, 12), total}) do
      out[#out + 1] = v
    end
  end
  return out
end

return redis.error_reply('unknown read ' .. tostring(read))
