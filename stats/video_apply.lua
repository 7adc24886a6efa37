-- Applies a batch of video events of one creator, atomically.
-- KEYS[1..7] = video, days, day, totals, dow, tags, tagviews
--              (stats/keys.py: CreatorKeys, same order)
-- ARGV[i]    = one event: 13 fields joined by the byte 0x1F: op (P = video.posted,
--              M = video.metrics_updated, D = video.deleted), video_id, version,
--              date_posted (YYYY-MM-DD, P only), hashtags joined by the byte 0x1E
--              (P only), views, likes, comments, shares, bookmarks, new_followers,
--              rh, rl (P and M only; empty fields elsewhere). The engagement rate in
--              units of 1e-7 percent is rh * 10^12 + rl. Counts are decimal strings of
--              integers 0..10^15. (One argument per event rather than 13: a client
--              packs, and fakeredis converts, each argument at a cost that dominated.)
-- Returns {applied, stale}: events that changed a video's record, events that did not.
--
-- A record in `video` is 13 fields joined by 0x1F: posted version, deleted version
-- (the greatest of each), metrics version, date_posted, hashtags (0x1E-joined),
-- views, likes, comments, shares, bookmarks, new_followers, rh, rl. A field is empty
-- until an event has supplied it. The video is present while its posted version is
-- greater than its deleted version; only present videos count in the aggregates.
-- `dow` fields are `<weekday>:<field>` with Monday = 0.
--
-- Aggregates move by (new contribution - old contribution) of each changed video.
-- Changes are summed per hash field in Lua numbers (doubles) and flushed with
-- HINCRBY before a pending sum could reach 2^53, so every stored sum is an exact
-- integer however large it grows. The batch is refused, before any write, when a sum could
-- outgrow a 64-bit integer; past that check no write can fail, so an error never
-- leaves half a batch behind.

local K_VIDEO, K_DAYS, K_DAY, K_TOTALS, K_DOW, K_TAGS, K_TAGVIEWS =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]

local call, byte, sub, find, format, concat = redis.call, string.byte, string.sub, string.find, string.format, table.concat
local tonumber, floor = tonumber, math.floor

local SEP, TAGSEP = '\31', '\30'
local FIELDS = {'n', 'views', 'likes', 'comments', 'shares', 'bookmarks', 'new_followers', 'rh', 'rl'}
local NF = #FIELDS
local MAG = NF + 1               -- slot of a pending cell holding the bound on its |sums|
local EXACT = 2^52               -- pending sums stay below 2^53, where doubles are exact
local MAX_VALUE = 10^15          -- no count, rh or rl of one event exceeds it
local INT64_HEADROOM = 9.2e18    -- just below 2^63 - 1, far above double rounding

-- Byte order, whatever collation the server's locale has. A version starts with 18
-- digits of microseconds: numbers decide unless the rounded values tie.
local function less(a, b)
  if a == b then return false end
  if a == '' or b == '' then return a == '' end
  local ta, tb = tonumber(sub(a, 1, 18)), tonumber(sub(b, 1, 18))
  if ta ~= tb then return ta < tb end  -- rounding to a double never reverses an order
  local la, lb = #a, #b
  for i = 1, (la < lb and la or lb) do
    local x, y = byte(a, i), byte(b, i)
    if x ~= y then return x < y end
  end
  return la < lb
end

-- include: lua_common

-- Refuse the batch up front if any sum could overflow: every aggregate is a part of
-- `totals` (counts are never negative), and the batch adds at most its own counts.
do
  local cur = call('HMGET', K_TOTALS, unpack(FIELDS))
  local top = 0
  for i = 1, NF do top = math.max(top, tonumber(cur[i] or '0')) end
  if top + #ARGV * MAX_VALUE > INT64_HEADROOM then
    local bound = {}
    for i = 1, NF do bound[i] = tonumber(cur[i] or '0') end
    for _, ev in ipairs(ARGV) do
      local f = split(ev, SEP)
      if f[1] == 'P' then bound[1] = bound[1] + 1 end
      if f[1] ~= 'D' then
        for i = 2, NF do bound[i] = bound[i] + tonumber(f[i + 4]) end
      end
    end
    for i = 1, NF do
      if bound[i] > INT64_HEADROOM then
        return redis.error_reply('SUMSOVERFLOW video sums of this creator would overflow 64-bit integers (' .. FIELDS[i] .. ')')
      end
    end
  end
end

-- Pending deltas: pending[key][field prefix] = {9 sums, bound on their magnitudes}.
local pending = {[K_DAY] = {}, [K_TOTALS] = {}, [K_DOW] = {}, [K_TAGS] = {}}
local days = {}  -- date -> {day number, `day` prefix, `dow` prefix}; dates to re-index
local tags = {}  -- hashtag -> true: hashtags to re-index

local function flush(key, prefix, cell)
  for i = 1, NF do
    local d = cell[i]
    if d ~= 0 then
      local field = prefix .. FIELDS[i]
      if call('HINCRBY', key, field, format('%.0f', d)) == 0 then call('HDEL', key, field) end
      cell[i] = 0
    end
  end
  cell[MAG] = 0
end

local function add(key, prefix, delta, top)
  local cells = pending[key]
  local cell = cells[prefix]
  if not cell then
    cell = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
    cells[prefix] = cell
  end
  if cell[MAG] + top > EXACT then flush(key, prefix, cell) end
  cell[MAG] = cell[MAG] + top
  for i = 1, NF do cell[i] = cell[i] + delta[i] end
end

-- What a record adds to the aggregates; nil when the video is absent.
local function contribution(rec)
  if rec[1] == '' or not less(rec[2], rec[1]) then return nil end
  local vals = {1}
  for i = 2, NF do vals[i] = tonumber(rec[i + 4]) or 0 end
  return {date = rec[4], tags = rec[5], vals = vals}
end

-- Moves every aggregate `c` counts in by `delta`, whose entries are at most `top` apart from 0.
local function move(c, delta, top)
  local d = days[c.date]
  if not d then
    local day = day_of(c.date)
    d = {day, c.date .. ':', format('%d', (day + 3) % 7) .. ':'}  -- 1970-01-01 was a Thursday
    days[c.date] = d
  end
  add(K_DAY, d[2], delta, top)
  add(K_TOTALS, '', delta, top)
  add(K_DOW, d[3], delta, top)
  if c.tags ~= '' then
    for _, tag in ipairs(split(c.tags, TAGSEP)) do
      tags[tag] = true
      add(K_TAGS, tag .. ':', delta, top)
    end
  end
end

-- Moves the aggregates of `c` by its whole contribution, times `sign`.
local function whole(c, sign)
  local delta, top = {}, 0
  for i = 1, NF do
    local x = c.vals[i]
    delta[i] = sign * x
    if x > top then top = x end
  end
  move(c, delta, top)
end

local function shift(before, after)
  if before and after and before.date == after.date and before.tags == after.tags then
    -- Same aggregates (a metrics update): move them by the difference once.
    local delta, top = {}, 0
    for i = 1, NF do
      local x = after.vals[i] - before.vals[i]
      delta[i] = x
      if x < 0 then x = -x end
      if x > top then top = x end
    end
    if top > 0 then move(after, delta, top) end
    return
  end
  if before then whole(before, -1) end
  if after then whole(after, 1) end
end

-- The first three fields of a record or an event (a record's are its versions).
local function head(s)
  local p1 = find(s, SEP, 1, true)
  local p2 = find(s, SEP, p1 + 1, true)
  local p3 = find(s, SEP, p2 + 1, true)
  return sub(s, 1, p1 - 1), sub(s, p1 + 1, p2 - 1), sub(s, p2 + 1, p3 - 1), p3
end

local applied, stale = 0, 0
for _, ev in ipairs(ARGV) do
  local op, id, version, at = head(ev)
  local old = call('HGET', K_VIDEO, id)
  -- Only the versions are needed to tell a stale event.
  local pv, dv, mv = '', '', ''
  if old then pv, dv, mv = head(old) end
  local newpost = op == 'P' and less(pv, version)
  local newmetrics = op ~= 'D' and less(mv, version)
  local newdel = op == 'D' and less(dv, version)
  if newpost or newmetrics or newdel then
    applied = applied + 1
    local rec = old and split(old, SEP) or {'', '', '', '', '', '', '', '', '', '', '', '', ''}
    local before = contribution(rec)
    local f = split(sub(ev, at + 1), SEP)  -- date_posted, hashtags, 8 counts
    if newpost then rec[1], rec[4], rec[5] = version, f[1], f[2] end
    if newmetrics then
      rec[3] = version
      for i = 6, 13 do rec[i] = f[i - 3] end
    end
    if newdel then rec[2] = version end
    call('HSET', K_VIDEO, id, concat(rec, SEP))
    shift(before, contribution(rec))
  else
    stale = stale + 1
  end
end

for key, cells in pairs(pending) do
  for prefix, cell in pairs(cells) do flush(key, prefix, cell) end
end

-- The indexes follow the sums: a date while it has a video, a hashtag likewise.
for date, d in pairs(days) do
  if call('HEXISTS', K_DAY, d[2] .. 'n') == 1 then
    call('ZADD', K_DAYS, string.sub(date, 1, 4) .. string.sub(date, 6, 7) .. string.sub(date, 9, 10), date)
  else
    call('ZREM', K_DAYS, date)
  end
end
for tag in pairs(tags) do
  local r = call('HMGET', K_TAGS, tag .. ':n', tag .. ':views')
  if r[1] then
    call('ZADD', K_TAGVIEWS, r[2] and ('-' .. r[2]) or '0', tag)
  else
    call('ZREM', K_TAGVIEWS, tag)
  end
end

return {applied, stale}
