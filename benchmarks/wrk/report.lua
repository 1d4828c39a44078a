-- Shared by multipart.lua and raw.lua: the picture to send, and one JSON line for load.py.
-- BENCH_BODY: the picture's path; BENCH_TYPE: its media type.

function read_picture()
  local path = assert(os.getenv("BENCH_BODY"), "set BENCH_BODY to the picture's path")
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data, os.getenv("BENCH_TYPE") or "application/octet-stream"
end

-- wrk counts every status >= 400 in errors.status (its "Non-2xx or 3xx responses" line).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nBENCH {"requests": %d, "duration_us": %d, "non_2xx": %d, "connect": %d, "read": %d, '
      .. '"write": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
