-- wrk script: POST /collections/{c}/points/search, one query per request.
--
--   wrk -t2 -c16 -d20s --latency -s bench/vector_search.lua http://127.0.0.1:18951 \
--       -- BODIES_FILE [COLLECTION]
--
-- BODIES_FILE has one JSON search body a line ({"vector":[...],"limit":10,
-- "params":{"hnsw_ef":N}}), as `bench/vector_http.py recall` writes it.
-- Requests are formatted once in init(); each thread starts at its own
-- offset and cycles through them. done() prints one line
-- "NEOCLOUD_RESULT {json}" for bench/vector.sh.

local threads = {}
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("id", counter)
   table.insert(threads, thread)
end

local requests_ = {}
local pos = 1
non200 = 0

function init(args)
   local path = args[1]
   local collection = args[2] or "glove"
   if not path then
      error("usage: wrk ... -s vector_search.lua URL -- BODIES_FILE [COLLECTION]")
   end
   local target = "/collections/" .. collection .. "/points/search"
   local headers = { ["Content-Type"] = "application/json" }
   local f = assert(io.open(path, "r"))
   for line in f:lines() do
      if line:match("%S") then
         table.insert(requests_, wrk.format("POST", target, headers, line))
      end
   end
   f:close()
   if #requests_ == 0 then error("no request bodies in " .. path) end
   local n = #requests_
   pos = math.floor(((id or 1) - 1) * n * 0.6180339887) % n + 1
end

function request()
   local r = requests_[pos]
   pos = pos + 1
   if pos > #requests_ then pos = 1 end
   return r
end

function response(status, headers, body)
   if status ~= 200 then non200 = non200 + 1 end
end

function done(summary, latency, requests)
   local bad = 0
   for _, t in ipairs(threads) do bad = bad + (t:get("non200") or 0) end
   local secs = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      'NEOCLOUD_RESULT {"requests":%d,"duration_s":%.3f,"rps":%.2f,'
      .. '"latency_ms":{"p50":%.3f,"p90":%.3f,"p99":%.3f,"max":%.3f,"mean":%.3f},'
      .. '"non_200":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
      summary.requests, secs, summary.requests / secs,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000,
      latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000,
      bad, e.connect, e.read, e.write, e.status, e.timeout))
end
