-- hookgate-load's wrk driver: each wrk thread replays its own file of pre-signed webhooks,
-- one request after the other, starting over only if the file runs out (the gateway then
-- answers duplicates, which the tool reports).
-- Arguments after `--`: the files' path prefix; thread N reads "<prefix>N.bin", requests
-- separated by a NUL byte.

local next_thread = 0

function setup(thread)
  thread:set("thread_index", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  local file = assert(io.open(args[1] .. thread_index .. ".bin", "rb"))
  local data = file:read("*a")
  file:close()
  requests = {}
  local from = 1
  while true do
    local nul = string.find(data, "\0", from, true)
    if not nul then break end
    requests[#requests + 1] = string.sub(data, from, nul - 1)
    from = nul + 1
  end
  assert(#requests > 0, "no requests in " .. args[1] .. thread_index .. ".bin")
  sent = 0
end

function request()
  sent = sent + 1
  return requests[(sent - 1) % #requests + 1]
end
