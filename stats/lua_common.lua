-- Helpers every script shares; stats/scripts.py puts this text where a script says
-- `-- include: lua_common`.

-- `s` cut at each `sep` (a plain string): the pieces, empty ones included.
local function split(s, sep)
  local out, start = {}, 1
  while true do
    local i = string.find(s, sep, start, true)
    if not i then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
end

-- Days since 1970-01-01 of a YYYY-MM-DD date (proleptic Gregorian), each date
-- converted once per call: a call meets a few dates many times over.
local days_of = {}

local function day_of(date)
  local z = days_of[date]
  if z == nil then
    local y = tonumber(string.sub(date, 1, 4))
    local m = tonumber(string.sub(date, 6, 7))
    local d = tonumber(string.sub(date, 9, 10))
    if m <= 2 then y = y - 1 end
    local era = math.floor(y / 400)
    local yoe = y - era * 400
    local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
    local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
    z = era * 146097 + doe - 719468
    days_of[date] = z
  end
  return z
end
