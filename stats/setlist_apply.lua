-- Applies a batch of performance events of one vertical, atomically.
-- KEYS        = the vertical's keys (setlist_lib.lua; stats/keys.py: VerticalKeys)
-- ARGV[1]     = today: the date (YYYY-MM-DD) the caller's clock reads; ARGV[2] = the gap (days)
--               from which a play is indexed in `bust` (stats/keys.py: BUSTOUT_INDEX_DAYS);
--               ARGV[3] = records per `perf` bucket (stats/keys.py: PERF_BUCKET_LOAD)
-- ARGV[4..]   = 6 per event: performance_id, version, song, show (show_date
--               YYYY-MM-DD, a zero byte, show_id), song_title, and the performance_id's
--               hash (pid_hash below) as 4 bytes, big-endian; song, show and song_title
--               are empty for a retraction (stats/setlists.py: event_args)
-- Returns {applied, stale}: events that changed the winner, events that lost to it.
--
-- Sorted-set scores are dates written as numbers (YYYYMMDD), readable in redis-cli;
-- day arithmetic uses day numbers (days since 1970-01-01) computed here.
--
-- Every read happens before the writes it decides, and no write can fail on valid
-- input, so an error never leaves half an event behind.

-- include: setlist_lib

local BUST_DAYS = tonumber(ARGV[2])
local LOAD = tonumber(ARGV[3])
local WINDOWS = {30, 90, 365}

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

local touched = {}   -- song -> true: summary, windows and velocity to refresh
local wdelta = {}    -- song -> {d30, d90, d365}
local sdelta = {}    -- song -> change of its number of plays

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
local layout = redis.call('HGET', K_META, 'layout')
if layout ~= LAYOUT and (stored or redis.call('EXISTS', K_PERF) == 1) then
  return redis.error_reply('STATELAYOUT ' .. (layout or '1') .. ' ' .. LAYOUT)
end

-- Show lists changed by this call, written back at the end of it.
local dirty = {}

-- Adds `entry` to the list of `show`, dated `date`.
local function show_add(show, date, entry)
  local list = show_lists[show] or show_list(show)
  local at = lower_bound(list, entry)
  if list[at] ~= entry then table.insert(list, at, entry) end
  dirty[show] = true
  local fresh = new_shows[date]
  if not fresh then
    fresh = {}
    new_shows[date] = fresh
  end
  fresh[show] = true
end

-- Removes the play `pid` from the list of `show`; returns its song.
local function show_remove(show, pid)
  local list = show_list(show)
  local needle = '\0' .. pid .. '\0'  -- songs are slugs and titles printable: no \0 in them
  for at, entry in ipairs(list) do
    if find(entry, needle, 1, true) then
      table.remove(list, at)
      dirty[show] = true
      return sub(entry, 1, find(entry, '\0', 1, true) - 1)
    end
  end
  return nil
end

local function count_range(lo, hi, i, by)
  -- plays with lo < day <= hi move window i by `by`: the dates come from `shows`
  if hi <= lo then return end
  for _, show in ipairs(redis.call('ZRANGEBYSCORE', K_SHOWS, '(' .. ymd_of_day(lo), ymd_of_day(hi))) do
    for _, entry in ipairs(show_list(show)) do
      bump(sub(entry, 1, find(entry, '\0', 1, true) - 1), i, by)
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

-- Songs are looked up in `songs`, `win` and `titles` one by one: the pin keeps each a
-- hash table, where a listpack would be searched field by field (stats/keys.py).
for _, key in ipairs({K_SONGS, K_WIN, K_TITLES}) do redis.call('HSETNX', key, PIN_FIELD, PIN_TEXT) end

-- A song's play dates (setlist_lib.lua), changed here and written back at the end;
-- a year's count in `songyears` is set from its chunk then.
local dirty_chunks, dirty_years = {}, {}

-- Adds `year` to the years of `song` (with a count set at the end), or drops it.
local function year_mark(song, year, present)
  local list = year_list(song)
  local j = search(list, YEAR_WIDTH, digits4(year, 1), false)
  local at = (j - 1) * YEAR_WIDTH
  if present then
    list = sub(list, 1, at) .. year .. '000000' .. sub(list, at + 1)
  else
    list = sub(list, 1, at) .. sub(list, at + YEAR_WIDTH + 1)
  end
  year_lists[song] = list
  dirty_years[song] = true
end

-- Sets `new` as the plays of `song` in `year`, the chunk `field` of `songplays`.
local function set_chunk(song, year, field, old, new)
  chunks[field] = new
  dirty_chunks[field] = song
  if old == '' then year_mark(song, year, true) elseif new == '' then year_mark(song, year, false) end
end

local function indexed(later, earlier)
  return earlier ~= nil and day_of(later) - day_of(earlier) >= BUST_DAYS
end

-- Index in `bust` the first play of `song` dated `date` (the only one of that day whose
-- previous play can lie on another day), whose previous play is dated `prev`.
local function bust_first(song, date, prev)
  local pid, show = plays_on(song, date)
  redis.call('ZADD', K_BUST, ymd_text(date), bust_member(song, show, pid, prev))
end

-- Keep `bust` exact for `song`'s first play on `following` (a date, or nil), once the
-- play before that day moved from the date `before` to `after` (nil: none).
local function rebust_next(song, following, before, after)
  if not following then return end
  if indexed(following, before) then redis.call('ZREM', K_BUST, bust_on(song, following)) end
  if indexed(following, after) then bust_first(song, following, after) end
end

-- Show, month and year counters, and the shows' play lists, only change at the end of
-- the call, once each: nothing in between reads them from Redis. A show's change is
-- added to its month's and year's there.
local show_delta = {}

local function count_show(show, by)
  show_delta[show] = (show_delta[show] or 0) + by
end

local function count_play(song, date, by)
  local day = day_of(date)
  if day <= today and day > today - WINDOWS[3] then
    for i = 1, 3 do
      if day > today - WINDOWS[i] then bump(song, i, by) end
    end
  end
  sdelta[song] = (sdelta[song] or 0) + by
  touched[song] = true
end

-- `titles`: a song's least title over all its recorded events, which its entries in
-- `showplays` leave out. A smaller one spells the old one out in the song's entries.
local title_refs, dirty_titles = {}, {}

local function title_ref(song)
  local ref = title_refs[song]
  if ref == nil then
    ref = redis.call('HGET', K_TITLES, song) or false
    title_refs[song] = ref
  end
  return ref
end

local function spell_out(song, ref)
  local prefix = song .. '\0'
  local list = year_list(song)
  for j = 1, #list / YEAR_WIDTH do
    local year = year_at(list, j)
    local c, last = chunk(song, year), nil
    for i = 1, #c / 4 do
      local date = date_at(year, c, i)
      if date ~= last then
        last = date
        for _, show in ipairs(shows_on(date)) do
          local entries = show_list(show)
          for at = lower_bound(entries, prefix), #entries do
            local e = entries[at]
            if sub(e, 1, #prefix) ~= prefix then break end
            if sub(e, -1) == '\0' then
              entries[at] = e .. ref
              dirty[show] = true
            end
          end
        end
      end
    end
  end
end

local function note_title(song, title)
  local ref = title_ref(song)
  if ref and ((BYTE_ORDER and title >= ref) or (not BYTE_ORDER and not less(title, ref))) then return end
  if ref then spell_out(song, ref) end
  title_refs[song] = title
  dirty_titles[song] = true
end

-- The MMDD digits of a YYYY-MM-DD date (a slot of `songplays`), each date once per call.
local mmdd_texts = {}

local function mmdd_text(date)
  local t = mmdd_texts[date]
  if t == nil then
    t = sub(date, 6, 7) .. sub(date, 9, 10)
    mmdd_texts[date] = t
  end
  return t
end

local function add_play(pid, song, show, title)
  local date = sub(show, 1, 10)
  show_add(show, date, song .. '\0' .. pid .. '\0' .. (title == title_ref(song) and '' or title))
  local year, c, lo, hi, field = locate(song, date)
  local at = (hi - 1) * 4
  if at == #c then  -- the usual: a new last play of its year
    set_chunk(song, year, field, c, c .. mmdd_text(date))
  else
    set_chunk(song, year, field, c, sub(c, 1, at) .. mmdd_text(date) .. sub(c, at + 1))
  end
  if lo == hi then
    -- The song's first play that day: it may be a bustout, and the next day's first
    -- play now follows it.
    local prev = before_slot(song, year, c, lo)
    if indexed(date, prev) then bust_first(song, date, prev) end
    rebust_next(song, from_slot(song, year, c, hi), prev, date)
  else
    -- The day's first play may now be this one: the index follows it.
    local m = bust_on(song, date)
    if m then
      local _, _, first, prev = bust_parts(m)
      if less(pid, first) then
        redis.call('ZREM', K_BUST, m)
        redis.call('ZADD', K_BUST, ymd_text(date), bust_member(song, show, pid, prev))
      end
    end
  end
  count_show(show, 1)
  count_play(song, date, 1)
end

local function remove_play(pid, show)
  local date = sub(show, 1, 10)
  local song = show_remove(show, pid)
  local year, c, lo, hi, field = locate(song, date)
  local at = (lo - 1) * 4
  set_chunk(song, year, field, c, sub(c, 1, at) .. sub(c, at + 5))
  local m = bust_on(song, date)
  local prev
  if m then
    local _, _, first, before = bust_parts(m)
    if first == pid then
      redis.call('ZREM', K_BUST, m)
      prev = before
    end
  end
  if hi - lo > 1 then
    if prev then bust_first(song, date, prev) end  -- the day's next play is its first now
  else
    rebust_next(song, from_slot(song, year, c, hi), date, before_slot(song, year, c, lo))
  end
  count_show(show, -1)
  count_play(song, date, -1)
end

-- `perf`: the record of every performance, 'performance_id\31version\31show' (present)
-- or 'performance_id\31version' (retracted), in buckets of about LOAD records: field
-- n -> the bucket's records in byte order, joined by \30. The buckets grow by linear
-- hashing, one split each time the number of records passes a multiple of LOAD, so
-- their number is a function of that count alone.
--
-- A bucket is kept as the string it is stored as, searched in place: cutting it into
-- records and joining them again cost more than all the rest of an event. The call's
-- changes to a bucket wait in `edits` and are spliced in at once when the bucket is
-- written or split: Redis' Lua hashes every byte of each string it makes (a bucket is a
-- kilobyte or so), and a call of events in date order meets a bucket about four times.
local records = tonumber(redis.call('HGET', K_META, 'records') or '0')
local records_before = records
local buckets, dirty_buckets = {}, {}
local edits, edit_of = {}, {}  -- b -> {{at, cut, record, pid}, ...}; b -> {pid -> its edit}

local function bucket_count(n)
  if n <= LOAD then return 1 end
  return (n + LOAD - 1 - (n + LOAD - 1) % LOAD) / LOAD
end

-- A performance_id read as a big-endian number, modulo the prime PID_MODULUS: the
-- source of its bucket number (stats/keys.py: perf_bucket). Two bytes a step keep every
-- value exact in a double (PID_MODULUS * 65536 < 2^53); the bytes are read eight to a
-- call of `byte`, which costs as much as the arithmetic on them.
local PID_MODULUS = 2654435761

local function pid_hash(pid)
  local h, n, i, M = 0, #pid, 1, PID_MODULUS
  while i + 7 <= n do
    local a, b, c, d, e, f, g, k = byte(pid, i, i + 7)
    h = ((h * 65536 + a * 256 + b) % M * 65536 + c * 256 + d) % M
    h = ((h * 65536 + e * 256 + f) % M * 65536 + g * 256 + k) % M
    i = i + 8
  end
  if i + 3 <= n then
    local w, x, y, z = byte(pid, i, i + 3)
    h = ((h * 65536 + w * 256 + x) % M * 65536 + y * 256 + z) % M
    i = i + 4
  end
  while i <= n do
    h = (h * 256 + byte(pid, i)) % PID_MODULUS
    i = i + 1
  end
  return h
end

local top_powers = {}

-- The greatest power of two not above `nb`, found once per call for each `nb`.
local function top_power(nb)
  local p = top_powers[nb]
  if p == nil then
    p = 1
    while p * 2 <= nb do p = p * 2 end
    top_powers[nb] = p
  end
  return p
end

-- Field b of `perf`: the bucket number's digits, written once per bucket and call (a
-- number passed to redis.call would be written out with printf at every command).
local bucket_fields = {}

local function bucket_field(b)
  local f = bucket_fields[b]
  if f == nil then
    f = string.format('%d', b)
    bucket_fields[b] = f
  end
  return f
end

local function bucket(b)
  local v = buckets[b]
  if v == nil then
    v = redis.call('HGET', K_PERF, bucket_field(b)) or ''
    buckets[b] = v
  end
  return v
end

-- Where the first record of the bucket `s` not less than `key` ('performance_id\31')
-- starts (#s + 1 when there is none), found by bisecting the bytes: every record before
-- `lo` is less than `key`, none from `hi` on, and both are record starts. A record
-- compares with `key` as its first #key bytes do, since \31 sorts below every byte an
-- id can hold.
local function record_at(s, key)
  local lo, hi, width = 1, #s + 1, #key - 1
  while lo < hi do
    local r = lo
    local mid = lo + hi
    mid = (mid - mid % 2) / 2
    if mid > lo then
      local j = find(s, '\30', mid - 1, true)
      if j and j + 1 < hi then r = j + 1 end
    end
    local head = sub(s, r, r + width)
    -- `<` where it is byte order: a call of `less` costs as much as the comparison
    if (BYTE_ORDER and head < key) or (not BYTE_ORDER and less(head, key)) then
      local j = find(s, '\30', r, true)
      lo = j and j + 1 or #s + 1
    else
      hi = r
    end
  end
  return lo
end

-- Splices the waiting edits of bucket `b` into it. An edit puts `record` where the
-- record of `cut` bytes starting at byte `at` of the bucket was (cut 0: before the record
-- starting there, or at the end when `at` is one past it), `pid` its performance_id.
local function by_place(x, y)
  if x[1] ~= y[1] then return x[1] < y[1] end
  return less(x[4], y[4])  -- inserts at one place go in byte order, before a replaced record
end

local function settle(b)
  local list = edits[b]
  if list == nil then return end
  edits[b], edit_of[b] = nil, nil
  local s = buckets[b]
  if #list > 1 then table.sort(list, by_place) end
  local out, pos = {}, 1  -- pos: the first byte of `s` not yet taken
  for _, e in ipairs(list) do
    local at = e[1]
    if at > pos then
      local last = at > #s and #s or at - 2  -- the segment's records, without the \30 after them
      out[#out + 1] = (pos == 1 and last == #s) and s or sub(s, pos, last)
      pos = at
    end
    out[#out + 1] = e[3]
    if e[2] > 0 then pos = at + e[2] + 1 end
  end
  if pos <= #s then out[#out + 1] = pos == 1 and s or sub(s, pos) end
  buckets[b] = table.concat(out, '\30')
end

-- Moves the records of the next bucket to split, when there are `nb` buckets.
local function split_bucket(nb)
  local p = top_power(nb)
  local s = nb - p
  local keep, move = {}, {}
  bucket(s)
  settle(s)
  local stored = buckets[s]
  for _, rec in ipairs(stored == '' and {} or split(stored, '\30')) do
    if pid_hash(sub(rec, 1, find(rec, '\31', 1, true) - 1)) % (2 * p) == s then
      keep[#keep + 1] = rec
    else
      move[#move + 1] = rec
    end
  end
  buckets[s], buckets[s + p] = table.concat(keep, '\30'), table.concat(move, '\30')
  dirty_buckets[s], dirty_buckets[s + p] = true, true
end

local function flush()
  local month_delta, total_delta = {}, 0
  for show, by in pairs(show_delta) do
    if by ~= 0 then
      local p, y = 'p:' .. sub(show, 1, 7), 'y:' .. sub(show, 1, 4)
      month_delta[p] = (month_delta[p] or 0) + by
      month_delta[y] = (month_delta[y] or 0) + by
      total_delta = total_delta + by
      local after = #show_lists[show]
      local before = after - by
      local s = 's:' .. sub(show, 1, 7)
      if before <= 0 and after > 0 then
        redis.call('ZADD', K_SHOWS, ymd_text(sub(show, 1, 10)), show)
        month_delta[s] = (month_delta[s] or 0) + 1
      elseif before > 0 and after <= 0 then
        redis.call('ZREM', K_SHOWS, show)
        month_delta[s] = (month_delta[s] or 0) - 1
      end
    end
  end
  local changed = {}  -- 'YYYY-MM' -> true: months whose line in `trend` is redone
  for field, by in pairs(month_delta) do
    if by ~= 0 then
      if redis.call('HINCRBY', K_MONTHS, field, by) <= 0 then redis.call('HDEL', K_MONTHS, field) end
      if sub(field, 1, 1) ~= 'y' then changed[sub(field, 3)] = true end
    end
  end
  if next(changed) then
    -- One pass over `trend`, the changed months in order.
    local months = {}
    for month in pairs(changed) do months[#months + 1] = month end
    table.sort(months)
    local old = redis.call('GET', K_TREND) or ''
    local pieces, done = {}, 0  -- bytes of `old` already taken
    for _, month in ipairs(months) do
      local counts = redis.call('HMGET', K_MONTHS, 's:' .. month, 'p:' .. month)
      local key = tonumber(sub(month, 1, 4) .. sub(month, 6, 7))
      local at = (search(old, TREND_WIDTH, key, false, 6) - 1) * TREND_WIDTH
      pieces[#pieces + 1] = sub(old, done + 1, at)
      done = at
      if tonumber(sub(old, at + 1, at + 6)) == key then done = at + TREND_WIDTH end
      if counts[1] then
        pieces[#pieces + 1] = string.format('%06d%06d%09d', key, tonumber(counts[1]), tonumber(counts[2]))
      end
    end
    pieces[#pieces + 1] = sub(old, done + 1)
    local trend = table.concat(pieces)
    if trend == '' then redis.call('DEL', K_TREND) else redis.call('SET', K_TREND, trend) end
  end
  if total_delta ~= 0 and redis.call('HINCRBY', K_META, 'plays', total_delta) <= 0 then
    redis.call('HDEL', K_META, 'plays')
  end
  if records ~= records_before then redis.call('HSET', K_META, 'records', records) end
  for show in pairs(dirty) do
    local list = show_lists[show]
    if #list == 0 then
      redis.call('HDEL', K_SHOWPLAYS, show)
    else
      redis.call('HSET', K_SHOWPLAYS, show, table.concat(list, SEP))
    end
  end
  for b in pairs(dirty_buckets) do
    settle(b)
    local stored = buckets[b]
    if stored == '' then
      redis.call('HDEL', K_PERF, bucket_field(b))
    else
      redis.call('HSET', K_PERF, bucket_field(b), stored)
    end
  end
  for field, song in pairs(dirty_chunks) do
    local c = chunks[field]
    if c == '' then
      redis.call('HDEL', K_SONGPLAYS, field)
    else
      redis.call('HSET', K_SONGPLAYS, field, c)
      local list = year_list(song)
      local at = (search(list, YEAR_WIDTH, digits4(field, #field - 3), false) - 1) * YEAR_WIDTH
      year_lists[song] = sub(list, 1, at + 4) .. string.format('%06d', #c / 4) .. sub(list, at + YEAR_WIDTH + 1)
      dirty_years[song] = true
    end
  end
  for song in pairs(dirty_titles) do redis.call('HSET', K_TITLES, song, title_refs[song]) end
  for song in pairs(dirty_years) do
    if year_lists[song] == '' then
      redis.call('HDEL', K_SONGYEARS, song)
    else
      redis.call('HSET', K_SONGYEARS, song, year_lists[song])
    end
  end
end

local applied, stale = 0, 0
-- The number of buckets, one more at each split, and the greatest power of two not
-- above it: the bucket of hash h is h % p, or h % 2p where that bucket has split already.
local nb = bucket_count(records)
local np = top_power(nb)
for base = 4, #ARGV, 6 do
  local pid, version, show = ARGV[base], ARGV[base + 1], ARGV[base + 3]
  local recorded = show ~= ''  -- a show is never empty: its show_id is not
  -- The caller computed pid_hash(pid); the bucket splits below compute it here.
  local h1, h2, h3, h4 = byte(ARGV[base + 5], 1, 4)
  local h = ((h1 * 256 + h2) * 256 + h3) * 256 + h4
  local b = h % np
  if b < nb - np then b = h % (2 * np) end
  local stored = bucket(b)
  local key = pid .. '\31'
  local pending = edit_of[b]
  local edit = pending and pending[pid]  -- an earlier event of this call wrote pid's record
  local at, rec  -- rec: the record of pid, when there is one
  if edit then
    rec = edit[3]
  else
    at = record_at(stored, key)
    if sub(stored, at, at + #key - 1) == key then  -- it starts at `at`
      local j = find(stored, '\30', at, true)
      rec = sub(stored, at, (j or #stored + 1) - 1)
    end
  end
  local oldversion, oldshow
  if rec then
    local cut = find(rec, '\31', #key + 1, true)
    if cut then
      oldversion, oldshow = sub(rec, #key + 1, cut - 1), sub(rec, cut + 1)
    else
      oldversion = sub(rec, #key + 1)
    end
  end
  if recorded then note_title(ARGV[base + 2], ARGV[base + 4]) end
  if rec and ((BYTE_ORDER and oldversion >= version) or (not BYTE_ORDER and not less(oldversion, version))) then
    stale = stale + 1
  else
    applied = applied + 1
    if oldshow then remove_play(pid, oldshow) end
    local new
    if recorded then
      add_play(pid, ARGV[base + 2], show, ARGV[base + 4])
      new = key .. version .. SEP .. show
    else
      new = key .. version
    end
    dirty_buckets[b] = true
    if edit then
      edit[3] = new
    else
      if not pending then
        pending = {}
        edit_of[b], edits[b] = pending, {}
      end
      edit = {at, rec and #rec or 0, new, pid}
      pending[pid] = edit
      local list = edits[b]
      list[#list + 1] = edit
    end
    if not rec then
      records = records + 1
      if records > LOAD and (records - 1) % LOAD == 0 then  -- bucket_count(records) grew by one
        split_bucket(nb)
        nb = nb + 1
        np = top_power(nb)
      end
    end
  end
end

flush()

-- Refresh what depends on a song's whole history: totals, first and last play,
-- title (that of the latest play), windows and velocity.
for song in pairs(touched) do
  local rec = redis.call('HGET', K_SONGS, song)
  local n = (rec and tonumber(sub(rec, 1, find(rec, SEP, 1, true) - 1)) or 0) + (sdelta[song] or 0)
  if n == 0 then
    redis.call('HDEL', K_SONGS, song)
    redis.call('HDEL', K_WIN, song)
    redis.call('ZREM', K_BYLAST, song)
    redis.call('ZREM', K_BYFIRST, song)
    redis.call('ZREM', K_VEL, song)
  else
    local firstdate, lastdate = first_date(song), last_date(song)
    local firstday = day_of(firstdate)
    local _, _, _, _, title = plays_on(song, lastdate)
    redis.call('HSET', K_SONGS, song, string.format('%d\31%s', n, title == '' and title_ref(song) or title))
    redis.call('ZADD', K_BYLAST, ymd_text(lastdate), song)
    redis.call('ZADD', K_BYFIRST, ymd_text(firstdate), song)
    local w = {0, 0, 0}
    local cur = redis.call('HGET', K_WIN, song)
    if cur then
      local p = split(cur, SEP)
      w = {tonumber(p[1]), tonumber(p[2]), tonumber(p[3])}
    end
    local d = wdelta[song]
    if d then
      w = {w[1] + d[1], w[2] + d[2], w[3] + d[3]}
      if w[1] == 0 and w[2] == 0 and w[3] == 0 then
        redis.call('HDEL', K_WIN, song)
      else
        redis.call('HSET', K_WIN, song, string.format('%d\31%d\31%d', w[1], w[2], w[3]))
      end
    end
    if firstday <= today then
      redis.call('ZADD', K_VEL, string.format('%d', 0 - (3 * w[1] + 2 * w[2] + w[3])), song)
    else
      redis.call('ZREM', K_VEL, song)
    end
  end
end

return {applied, stale}
