-- wrk script: PUT packet captures with unique names (one counter per wrk thread).
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  base = args[1]
  target = args[2]
  counter = 0
  prefix = "t" .. tid .. "r" .. math.random(1, 1000000000)
  body = '{"properties":{"target":"' .. target .. '","storageLocation":{"filePath":"/var/captures/b.cap"}}}'
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  counter = counter + 1
  return wrk.format("PUT", base .. "/packetCaptures/" .. prefix .. "n" .. counter .. "?api-version=2026-03-01", headers, body)
end
