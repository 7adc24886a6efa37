-- Answers one creator-video read from one consistent view of a creator's state.
-- KEYS[1..7] = video, days, day, totals, dow, tags, tagviews
--              (stats/keys.py: CreatorKeys, same order)
-- ARGV[1]   = read: series | overview | hashtags | posting
-- ARGV[2..] = the read's parameters (see each branch below)
-- Returns false when the creator has no state; otherwise a flat array whose layout
-- each branch documents. Sums come back as decimal strings (exact past 2^53), or
-- false where the field is absent, which means 0.

local K_VIDEO, K_DAYS, K_DAY, K_TOTALS, K_DOW, K_TAGS, K_TAGVIEWS =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]

if redis.call('EXISTS', K_VIDEO) == 0 then return false end

local read = ARGV[1]

local function append(out, values)
  for i = 1, #values do out[#out + 1] = values[i] end
end

-- HMGET of `prefix .. field` for each field; absent fields are false.
local function fields(key, prefix, names)
  local f = {}
  for i, name in ipairs(names) do f[i] = prefix .. name end
  return redis.call('HMGET', key, unpack(f))
end

if read == 'series' then
  -- ARGV[2], ARGV[3] = first and last date as YYYYMMDD (or -inf / +inf)
  -- -> 6 per posting date, ascending: date, n, views, new_followers, rh, rl
  local out = {}
  for _, date in ipairs(redis.call('ZRANGEBYSCORE', K_DAYS, ARGV[2], ARGV[3])) do
    out[#out + 1] = date
    append(out, fields(K_DAY, date .. ':', {'n', 'views', 'new_followers', 'rh', 'rl'}))
  end
  return out

elseif read == 'overview' then
  -- -> first date, last date, then n, views, likes, comments, shares, bookmarks,
  --    new_followers, rh, rl over every present video
  local out = {redis.call('ZRANGE', K_DAYS, 0, 0)[1] or false, redis.call('ZRANGE', K_DAYS, -1, -1)[1] or false}
  append(out, fields(K_TOTALS, '', {'n', 'views', 'likes', 'comments', 'shares', 'bookmarks',
                                    'new_followers', 'rh', 'rl'}))
  return out

elseif read == 'hashtags' then
  -- ARGV[2] = limit (>= 1)
  -- -> number of hashtags, then 5 per hashtag, most viewed first: hashtag, n, views, rh, rl
  --    (more than limit of them when sums past 2^53 share a score: see below)
  local out = {redis.call('ZCARD', K_TAGVIEWS)}
  local top = redis.call('ZRANGE', K_TAGVIEWS, 0, tonumber(ARGV[2]) - 1, 'WITHSCORES')
  local tags, seen = {}, {}
  for i = 1, #top, 2 do
    tags[#tags + 1] = top[i]
    seen[top[i]] = true
  end
  -- A score is a double: past 2^53 two different sums can round to one score, which
  -- Redis then orders by name. Every hashtag sharing the last row's score comes back
  -- as well, and the caller sorts by the exact sums before it cuts to limit.
  local last = top[#top]
  if last and tonumber(last) <= -9007199254740992 then
    for _, tag in ipairs(redis.call('ZRANGEBYSCORE', K_TAGVIEWS, last, last)) do
      if not seen[tag] then tags[#tags + 1] = tag end
    end
  end
  for _, tag in ipairs(tags) do
    out[#out + 1] = tag
    append(out, fields(K_TAGS, tag .. ':', {'n', 'views', 'rh', 'rl'}))
  end
  return out

elseif read == 'posting' then
  -- -> 4 per weekday, Monday (0) to Sunday (6): n, views, rh, rl
  local out = {}
  for wd = 0, 6 do
    append(out, fields(K_DOW, wd .. ':', {'n', 'views', 'rh', 'rl'}))
  end
  return out
end

return redis.error_reply('ERR unknown read ' .. tostring(read))
