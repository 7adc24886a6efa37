-- What setlist_apply.lua and setlist_read.lua share: the keys, dates, byte order, a
-- show's play list and a song's play dates. stats/scripts.py puts this text where a
-- script says `-- include: setlist_lib`.
-- KEYS[1..14] = perf, showplays, songplays, songyears, shows, months, songs, bylast,
--               byfirst, win, vel, meta, bust, titles, trend  (stats/keys.py: VerticalKeys)

local K_PERF, K_SHOWPLAYS, K_SONGPLAYS, K_SONGYEARS, K_SHOWS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_MONTHS, K_SONGS, K_BYLAST, K_BYFIRST, K_WIN = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local K_VEL, K_META, K_BUST, K_TITLES, K_TREND = KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15]

local SEP = '\31'
local LAYOUT = '3'  -- stats/keys.py: SETLIST_LAYOUT
-- The field that keeps `songs`, `win` and `titles` hash tables (stats/keys.py: PIN_FIELD).
local PIN_FIELD = '~hashtable'
local PIN_TEXT = 'keeps this hash in the hashtable encoding of Redis (a value over hash-max-listpack-value bytes): a lookup by song stays O(1) at any number of songs'

local sub, find, byte = string.sub, string.find, string.byte

-- Byte order, whatever collation the server's locale has: Lua compares strings with
-- strcoll, which is byte order in the C and C.UTF-8 locales (Redis' usual ones) and
-- is used then; under another collation each byte is compared here.
local function byte_less(a, b)
  if a == b then return false end
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = byte(a, i), byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local function native_less(a, b) return a < b end

local BYTE_ORDER = 'B' < 'a' and 'Z' < '_' and '_' < 'a' and '-' < '0' and '9' < 'A'
  and 'a\0b' < 'a\1' and 'ab' < 'a~' and not ('a' < 'B') and '~' < '\128' and '\127' < '\255'
local less = BYTE_ORDER and native_less or byte_less

-- include: lua_common

local ymd_texts, ymds_of = {}, {}

-- The YYYYMMDD score of a YYYY-MM-DD date, as the text a command takes: a Lua number
-- passed to redis.call is written out with printf each time (about 2,900 instructions,
-- twice what the text costs once), and a call meets the same dates many times over.
local function ymd_text(date)
  local t = ymd_texts[date]
  if t == nil then
    t = sub(date, 1, 4) .. sub(date, 6, 7) .. sub(date, 9, 10)
    ymd_texts[date] = t
  end
  return t
end

-- The YYYYMMDD score of a YYYY-MM-DD date, as a number.
local function ymd(date)
  local n = ymds_of[date]
  if n == nil then
    n = tonumber(ymd_text(date))
    ymds_of[date] = n
  end
  return n
end

-- The first index of the sorted `list` whose entry is not less than `entry`.
local function lower_bound(list, entry)
  local lo, hi = 1, #list + 1
  while lo < hi do
    local mid = lo + hi
    mid = (mid - mid % 2) / 2
    -- `<` where it is byte order: a call of `less` costs as much as the comparison
    if (BYTE_ORDER and list[mid] < entry) or (not BYTE_ORDER and less(list[mid], entry)) then
      lo = mid + 1
    else
      hi = mid
    end
  end
  return lo
end

-- The plays of a show ('date\0show_id'): 'song\0performance_id\0title' entries in byte
-- order (title empty when it is the song's `titles` entry), read once per call.
local show_lists = {}

-- The field `field` of the hash `key` cut at each `sep` byte into a list (empty when
-- absent), read once per call into `cache`.
local function cached_list(cache, key, field, sep)
  local list = cache[field]
  if list == nil then
    list = {}
    local stored = redis.call('HGET', key, field)
    if stored then list = split(stored, sep) end  -- plain finds: a pattern costs 2x
    cache[field] = list
  end
  return list
end

local function show_list(show)
  return cached_list(show_lists, K_SHOWPLAYS, show, SEP)
end

-- Shows the caller has given plays that `shows` does not list yet: date -> {show = true}.
local new_shows = {}

-- The plays of `song` dated `date`, over every show of that day: the least and the
-- greatest performance_id, with the show ('date\0show_id') of each and the title of
-- the greatest; nil when there is none.
-- Every show dated `date` that may have plays: those `shows` lists and those given plays
-- in this call.
local function shows_on(date)
  local day = ymd_text(date)
  local shows = redis.call('ZRANGEBYSCORE', K_SHOWS, day, day)
  local fresh = new_shows[date]
  if fresh then
    local listed = {}
    for _, show in ipairs(shows) do listed[show] = true end
    for show in pairs(fresh) do
      if not listed[show] then shows[#shows + 1] = show end
    end
  end
  return shows
end

local function plays_on(song, date)
  local lo, lo_show, hi, hi_show, hi_title
  local prefix = song .. '\0'
  for _, show in ipairs(shows_on(date)) do
    local list = show_list(show)
    local i = lower_bound(list, prefix)
    while list[i] and sub(list[i], 1, #prefix) == prefix do
      local rest = sub(list[i], #prefix + 1)
      local z = find(rest, '\0', 1, true)
      local pid = sub(rest, 1, z - 1)
      if lo == nil or less(pid, lo) then lo, lo_show = pid, show end
      if hi == nil or less(hi, pid) then hi, hi_show, hi_title = pid, show, sub(rest, z + 1) end
      i = i + 1
    end
  end
  return lo, lo_show, hi, hi_show, hi_title
end

-- A song's play dates: `songplays` 'song\0YYYY' -> the MMDD of each play that year,
-- 4 digits each, ascending (a date played twice is there twice); `songyears` song ->
-- 'YYYY' and a 6-digit count per year with plays, ascending. Read once per call.
local chunks, year_lists = {}, {}
local YEAR_WIDTH = 10

-- The field `field` of the hash `key` ('' when absent), read once per call into `cache`.
local function cached_hget(cache, key, field)
  local v = cache[field]
  if v == nil then
    v = redis.call('HGET', key, field) or ''
    cache[field] = v
  end
  return v
end

local function chunk(song, year)
  return cached_hget(chunks, K_SONGPLAYS, song .. '\0' .. year)
end

local function year_list(song)
  return cached_hget(year_lists, K_SONGYEARS, song)
end

-- The number the 4 digits of `s` from byte `i` on write: one call, where sub and
-- tonumber would make a string and parse it (strtod) every time.
local function digits4(s, i)
  local a, b, c, d = byte(s, i, i + 3)
  return a * 1000 + b * 100 + c * 10 + d - 53328  -- 53328 = 1111 * byte('0')
end

-- The first slot (1-based) of the fixed-width list `s` whose leading `digits` digits
-- (4 when not given) are >= k (> k when `after`); one past the last slot when none is.
local function search(s, width, k, after, digits)
  local lo, hi = 1, #s / width + 1
  local last = (digits or 4) - 1
  while lo < hi do
    local mid = lo + hi
    mid = (mid - mid % 2) / 2
    local at = (mid - 1) * width
    local v
    if last == 3 then v = digits4(s, at + 1) else v = tonumber(sub(s, at + 1, at + 1 + last)) end
    if v < k or (after and v == k) then lo = mid + 1 else hi = mid end
  end
  return lo
end

local TREND_WIDTH = 21  -- stats/keys.py: TREND_WIDTH

local mmdds = {}

-- The MMDD number of a YYYY-MM-DD date, each date read once per call.
local function mmdd(date)
  local n = mmdds[date]
  if n == nil then
    local m, mm, _, d, dd = byte(date, 6, 10)
    n = m * 1000 + mm * 100 + d * 10 + dd - 53328
    mmdds[date] = n
  end
  return n
end

-- The date of slot i of the chunk `c` of `year`.
local function date_at(year, c, i)
  local at = (i - 1) * 4
  return year .. '-' .. sub(c, at + 1, at + 2) .. '-' .. sub(c, at + 3, at + 4)
end

local function year_at(list, j)
  return sub(list, (j - 1) * YEAR_WIDTH + 1, (j - 1) * YEAR_WIDTH + 4)
end

-- Where `date` falls among the plays of `song` in its year: the year, that year's
-- chunk, the first slot not before `date`, the first slot after it, and the chunk's
-- field in `songplays`.
local function locate(song, date)
  local year = sub(date, 1, 4)
  local field = song .. '\0' .. year
  local c = cached_hget(chunks, K_SONGPLAYS, field)
  local md, n = mmdd(date), #c / 4
  if n == 0 or digits4(c, #c - 3) < md then return year, c, n + 1, n + 1, field end  -- the usual: a new last play
  return year, c, search(c, 4, md, false), search(c, 4, md, true), field
end

-- The latest play date before slot `lo` of the chunk `c` of `year`, over all years.
local function before_slot(song, year, c, lo)
  if lo > 1 then return date_at(year, c, lo - 1) end
  local list = year_list(song)
  local j = search(list, YEAR_WIDTH, digits4(year, 1), false) - 1
  if j < 1 then return nil end
  local y = year_at(list, j)
  local cy = chunk(song, y)
  return date_at(y, cy, #cy / 4)
end

-- The earliest play date from slot `hi` of the chunk `c` of `year` on, over all years.
local function from_slot(song, year, c, hi)
  if hi <= #c / 4 then return date_at(year, c, hi) end
  local list = year_list(song)
  local n = #list / YEAR_WIDTH
  local y4 = digits4(year, 1)
  if n == 0 or digits4(list, (n - 1) * YEAR_WIDTH + 1) <= y4 then return nil end
  local y = year_at(list, search(list, YEAR_WIDTH, y4, true))
  return date_at(y, chunk(song, y), 1)
end

-- The latest play date of `song` before `date` (on or before it when `inclusive`).
local function play_before(song, date, inclusive)
  local year, c, lo, hi = locate(song, date)
  return before_slot(song, year, c, inclusive and hi or lo)
end

local function first_date(song)
  local list = year_list(song)
  if list == '' then return nil end
  local y = year_at(list, 1)
  return date_at(y, chunk(song, y), 1)
end

local function last_date(song)
  local list = year_list(song)
  if list == '' then return nil end
  local y = year_at(list, #list / YEAR_WIDTH)
  local c = chunk(song, y)
  return date_at(y, c, #c / 4)
end

-- Plays of `song` dated on or before `date`.
local function count_upto(song, date)
  local list = year_list(song)
  local year = tonumber(sub(date, 1, 4))
  local n = 0
  for j = 1, #list / YEAR_WIDTH do
    local at = (j - 1) * YEAR_WIDTH
    if digits4(list, at + 1) >= year then break end
    n = n + tonumber(sub(list, at + 5, at + YEAR_WIDTH))
  end
  return n + search(chunk(song, sub(date, 1, 4)), 4, mmdd(date), true) - 1
end

-- The `bust` member of a play: 'song\0show_id\0performance_id\0previous play's date'.
local function bust_member(song, show, pid, prev)
  return song .. '\0' .. sub(show, 12) .. '\0' .. pid .. '\0' .. prev
end

-- The song, show_id, performance_id and previous play's date of a `bust` member.
local function bust_parts(m)
  local a = find(m, '\0', 1, true)
  local b = find(m, '\0', a + 1, true)
  local c = find(m, '\0', b + 1, true)
  return sub(m, 1, a - 1), sub(m, a + 1, b - 1), sub(m, b + 1, c - 1), sub(m, c + 1)
end

-- The `bust` member of `song` dated `date`, or nil (a song has at most one a day).
local function bust_on(song, date)
  local prefix = song .. '\0'
  local day = ymd_text(date)
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', K_BUST, day, day)) do
    if sub(m, 1, #prefix) == prefix then return m end
  end
  return nil
end
