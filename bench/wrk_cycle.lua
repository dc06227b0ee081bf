-- wrk script: send pre-signed webhooks, each once. The request file holds one
-- request per line: "<path>\t<timestamp>\t<signature>\t<JSON body>". Thread k of n
-- sends lines k, k+n, k+2n, ...; past the end it stops sending new messages.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(args[1], "r"))
  local n = tonumber(args[2])
  requests = {}
  local index = 0
  for line in file:lines() do
    if index % n == id then
      local path, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      table.insert(requests, wrk.format("POST", path, {
        ["Content-Type"] = "application/json",
        ["X-Chatwoot-Timestamp"] = ts,
        ["X-Chatwoot-Signature"] = sig,
      }, body))
    end
    index = index + 1
  end
  file:close()
  position = 0
end

function request()
  position = position + 1
  if position > #requests then
    position = 1  -- out of fresh messages: repeats (answered 200 duplicate) would skew it
    exhausted = true
  end
  return requests[position]
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    if thread:get("exhausted") then
      io.write("EXHAUSTED\n")
    end
  end
end
