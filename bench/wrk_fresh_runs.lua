-- POST the fixture-shaped delivery with a fresh run id per request (no duplicates).
-- BENCH_TEMPLATE names a file holding the body with @@RUN_ID@@ where the run id goes;
-- BENCH_PATH is the request path with the secret.
local parts = {}
local counter = 0
local nonce = 0
-- `tid` is a global each thread gets from setup() via thread:set.
tid = 0

local function load_template()
  local f = assert(io.open(os.getenv("BENCH_TEMPLATE"), "rb"))
  local text = f:read("*a")
  f:close()
  local out, start = {}, 1
  while true do
    local i, j = string.find(text, "@@RUN_ID@@", start, true)
    if not i then break end
    out[#out + 1] = string.sub(text, start, i - 1)
    start = j + 1
  end
  out[#out + 1] = string.sub(text, start)
  return out
end

local thread_counter = 0
function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("tid", thread_counter)
end

function init(args)
  parts = load_template()
  math.randomseed(os.time() * 1000 + (tid or 0))
  nonce = math.random(0, 0x7fffffff)
  wrk.method = "POST"
  wrk.path = os.getenv("BENCH_PATH")
  wrk.headers["Content-Type"] = "application/json"
end

local function run_id()
  counter = counter + 1
  -- uuid4 layout: random nonce per thread, thread id, a per-thread counter: unique per request.
  return string.format("%08x-%04x-4%03x-8%03x-%012x", nonce, tid % 0x10000,
                       math.random(0, 0xfff), math.random(0, 0xfff), counter)
end

function request()
  local id = run_id()
  return wrk.format(nil, nil, nil, table.concat(parts, id))
end

function done(summary, latency, requests)
  io.write(string.format("BENCH_JSON {\"requests\": %d, \"duration_us\": %d, \"errors_status\": %d, " ..
    "\"errors_connect\": %d, \"errors_read\": %d, \"errors_write\": %d, \"errors_timeout\": %d, " ..
    "\"p50_us\": %d, \"p99_us\": %d}\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
