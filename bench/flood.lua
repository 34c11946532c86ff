-- wrk script: every request carries a distinct X-Forwarded-For address, so a
-- rate limiter keyed on client_ip (trusted_hops 1) sees a new key each time.
-- Each wrk thread starts its own address range.
local counter = 0
local base = 0

function setup(thread)
  thread:set("base", math.random(0, 2^20) * 4096)
end

request = function()
  counter = counter + 1
  local n = base + counter
  local a = 11 + math.floor(n / 16777216) % 200
  local b = math.floor(n / 65536) % 256
  local c = math.floor(n / 256) % 256
  local d = n % 256
  return wrk.format("GET", "/", { ["X-Forwarded-For"] = a .. "." .. b .. "." .. c .. "." .. d })
end
