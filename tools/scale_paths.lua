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
