-- wrk script for the gateway benchmark: POST /v1/embeddings with
-- {"model":"echo","input":"hi"} on every request.
--
--   wrk -t1 -c64 -d10s --latency -s bench/gateway.lua http://127.0.0.1:9102
--
-- done() prints one line "NEOCLOUD_RESULT {json}" that gateway.sh parses.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

non200 = 0

function init(args)
   local body = '{"model":"echo","input":"hi"}'
   req = wrk.format("POST", "/v1/embeddings", { ["Content-Type"] = "application/json" }, body)
end

function request()
   return req
end

function response(status, headers, body)
   if status ~= 200 then
      non200 = non200 + 1
   end
end

function done(summary, latency, requests)
   local bad = 0
   for _, t in ipairs(threads) do
      bad = bad + (t:get("non200") or 0)
   end
   local secs = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      'NEOCLOUD_RESULT {"requests":%d,"duration_s":%.3f,"rps":%.2f,'
      .. '"latency_ms":{"p50":%.4f,"p90":%.4f,"p99":%.4f,"max":%.3f,"mean":%.4f},'
      .. '"non_200":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
      summary.requests, secs, summary.requests / secs,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000,
      latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000,
      bad, e.connect, e.read, e.write, e.status, e.timeout))
end
