-- wrk script of S8/S9: FQDB_WRK_WRITES of the requests are POST /users, the rest
-- GET /users/<id> of a random existing row (1..FQDB_WRK_ROWS). done() prints one
-- machine-readable line that bench/web.py parses.
local writes = tonumber(os.getenv("FQDB_WRK_WRITES") or "0.1")
local rows = tonumber(os.getenv("FQDB_WRK_ROWS") or "10000")
local counter = 0
local headers = { ["Content-Type"] = "application/json" }

init = function(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

request = function()
  counter = counter + 1
  if math.random() < writes then
    local body = string.format('{"username": "w%d-%d", "age": %d}', math.random(1, 1e9), counter, counter % 90)
    return wrk.format("POST", "/users", headers, body)
  end
  return wrk.format("GET", "/users/" .. math.random(1, rows))
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "FQDB-WRK requests=%d duration_us=%d status_errors=%d socket_errors=%d p50_us=%f p99_us=%f max_us=%f mean_us=%f\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, latency.mean))
end
