-- wrk script of tools/check_scale.py: every thread cycles through the paths of SCALE_PATHS
-- (one per line), starting at its own offset, so the load covers every item's replica.

local paths = {}
for line in io.lines(os.getenv("SCALE_PATHS")) do
  if line ~= "" then
    paths[#paths + 1] = line
  end
end

local counter = 0

function setup(thread)
  thread:set("offset", counter * 7919)
  counter = counter + 1
end

local i = 0

function init(args)
  i = offset or 0
end

function request()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end

-- With SCALE_COUNT set: count the answers of each replica (the X-Upstream header the balancer
-- adds) and print `upstream <name> <count>` lines at the end, summed over the threads.
if os.getenv("SCALE_COUNT") then
  local threads = {}
  local base_setup = setup
  function setup(thread)
    base_setup(thread)
    threads[#threads + 1] = thread
  end

  counts = {}

  function response(status, headers, body)
    local up = headers["X-Upstream"] or headers["x-upstream"] or "none"
    counts[up] = (counts[up] or 0) + 1
  end

  function done(summary, latency, requests)
    local total = {}
    for _, t in ipairs(threads) do
      for up, n in pairs(t:get("counts")) do
        total[up] = (total[up] or 0) + n
      end
    end
    for up, n in pairs(total) do
      io.write(string.format("upstream %s %d\n", up, n))
    end
  end
end
