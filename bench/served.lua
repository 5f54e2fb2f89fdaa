-- wrk script: POST /v1/embeddings with one sentence per request.
--
--   wrk -t2 -c16 -d15s --latency -s bench/served.lua http://127.0.0.1:8080 \
--       -- CORPUS_FILE [MODEL]
--
-- CORPUS_FILE has one sentence a line (python bench/corpus.py --out FILE).
-- Every request body is built once in init(); each thread starts at its own
-- offset in the corpus and walks it, so threads (and the connections of a
-- thread, which take requests in turn) send different sentences.
-- done() prints one line "NEOCLOUD_RESULT {json}" that served.sh parses.

local threads = {}
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("id", counter)
   table.insert(threads, thread)
end

local function json_string(s)
   local out = s:gsub('[%c"\\]', function(c)
      if c == '"' then return '\\"'
      elseif c == "\\" then return "\\\\"
      elseif c == "\n" then return "\\n"
      elseif c == "\r" then return "\\r"
      elseif c == "\t" then return "\\t"
      else return string.format("\\u%04x", c:byte()) end
   end)
   return '"' .. out .. '"'
end

local requests_ = {}
local pos = 1
non200 = 0
too_many = 0

function init(args)
   local path = args[1]
   local model = args[2] or "all-minilm-l6-v2"
   if not path then
      error("usage: wrk ... -s served.lua URL -- CORPUS_FILE [MODEL]")
   end
   local f = assert(io.open(path, "r"))
   local headers = { ["Content-Type"] = "application/json" }
   for line in f:lines() do
      if line:match("%S") then
         local body = '{"model":' .. json_string(model) .. ',"input":' .. json_string(line)
            .. ',"encoding_format":"float"}'
         table.insert(requests_, wrk.format("POST", "/v1/embeddings", headers, body))
      end
   end
   f:close()
   if #requests_ == 0 then error("no sentences in " .. path) end
   -- spread the threads over the corpus (id is set by setup())
   -- (golden-ratio strides keep any number of threads far apart)
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
   if status ~= 200 then
      non200 = non200 + 1
      if status == 429 then too_many = too_many + 1 end
   end
end

function done(summary, latency, requests)
   local bad, n429 = 0, 0
   for _, t in ipairs(threads) do
      bad = bad + (t:get("non200") or 0)
      n429 = n429 + (t:get("too_many") or 0)
   end
   local secs = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      'NEOCLOUD_RESULT {"requests":%d,"duration_s":%.3f,"rps":%.2f,'
      .. '"latency_ms":{"p50":%.3f,"p90":%.3f,"p99":%.3f,"max":%.3f,"mean":%.3f},'
      .. '"non_200":%d,"status_429":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
      summary.requests, secs, summary.requests / secs,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000,
      latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000,
      bad, n429, e.connect, e.read, e.write, e.status, e.timeout))
end
