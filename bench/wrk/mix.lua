-- wrk script for weft-kv and its twin: READS % GET, the rest PUT, over
-- weft-load's key space (`load-0` .. `load-9999`, filled beforehand) with
-- weft-load's 64-byte PUT values (the defaults). Usage:
--   wrk -t2 -c64 -d10s --latency -s bench/wrk/mix.lua http://127.0.0.1:PORT [-- READS KEYS VALUE_BYTES]
-- (`-- 90` is the read-heavy mix, `-- 10` the write-heavy one.)
-- The last line printed is machine-readable (bench kv-load parses it).

local reads = 90

local keys, value = 10000, string.rep("v", 64)
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("id", counter)
end

function init(args)
   if args[1] then reads = tonumber(args[1]) end
   if args[2] then keys = tonumber(args[2]) end
   if args[3] then value = string.rep("v", tonumber(args[3])) end
   math.randomseed(id)
end

function request()
   local path = "/v1/kv/load-" .. math.random(0, keys - 1)
   if math.random(100) <= reads then
      return wrk.format("GET", path)
   end
   return wrk.format("PUT", path, nil, value)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "wrk-result requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d errors=%d\n",
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      e.connect + e.read + e.write + e.status + e.timeout))
end
