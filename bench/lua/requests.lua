-- Replays a request file for wrk (bench/load.py writes it): one request per line,
-- "METHOD<TAB>PATH<TAB>BODY" (BODY may be empty). Arguments after "--": the file,
-- "random" (pick a line at random) or "sequence" (go through the lines in order, each
-- thread from its own offset), and an access token for the Authorization header (may be empty). In a body, every "__REV__" becomes a value unique to the
-- request, so an update always changes the content. done() prints one JSON line.

local entries = {}
local sequential = false
local counter = 0
local next_thread = 0
local get_headers = { ["Accept"] = "application/fhir+json" }
local body_headers = { ["Accept"] = "application/fhir+json", ["Content-Type"] = "application/fhir+json" }

function setup(thread)
  next_thread = next_thread + 1
  thread:set("tid", next_thread)
end

function init(args)
  local path = args[1]
  sequential = args[2] == "sequence"
  for line in io.lines(path) do
    local method, target, body = line:match("^(%u+)\t([^\t]*)\t?(.*)$")
    if method then
      entries[#entries + 1] = { method, target, body }
    end
  end
  if args[3] and args[3] ~= "" then
    get_headers["Authorization"] = "Bearer " .. args[3]
    body_headers["Authorization"] = "Bearer " .. args[3]
  end
  math.randomseed(os.time() + (tid or 0) * 7919)
  counter = (tid or 0) * 100003
end


function request()
  counter = counter + 1
  local entry
  if sequential then
    entry = entries[(counter % #entries) + 1]
  else
    entry = entries[math.random(#entries)]
  end
  local body = entry[3]
  if body == "" then
    return wrk.format(entry[1], entry[2], get_headers)
  end
  body = body:gsub("__REV__", tostring(tid) .. "-" .. tostring(counter))
  return wrk.format(entry[1], entry[2], body_headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
