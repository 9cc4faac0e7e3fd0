-- wrk script of scripts/load-mix.sh: a weighted, deterministic mix of medserve requests.
--
-- LOAD_MIX_PATHS    file of "category<TAB>group<TAB>path<TAB>transform key" lines, written by
--                   scripts/load-mix.sh from the API (transform key "-" when the request runs no
--                   cached transform chain). Per request: a category by weight, then a group
--                   (an item, a dataset) uniformly, then one of that group's paths uniformly.
--                   Unset: wrk sends its URL unchanged (the /healthz baseline).
-- LOAD_MIX_WEIGHTS  e.g. "listing=15,image=40,slice=30,volume=15" (the default)
-- LOAD_MIX_SEED     base of the per-thread seeds (default 1): thread k uses seed*1000 + k, so
--                   every thread sends the same sequence of requests in every run.
--
-- Every request carries "X-Request-Id: <category>:<group>:<path index>:<thread>", which medserve
-- echoes back (even on errors), so a non-2xx answer is reported with the exact path it answered.
-- done() prints "RESULT key=value ..." and one "BAD status path body" line per recorded failure
-- (at most 10 per thread).

local CATEGORIES = { "listing", "image", "slice", "volume" }

local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  threads[#threads + 1] = thread
end

local file = os.getenv("LOAD_MIX_PATHS")
local mixed = file ~= nil and file ~= ""

-- groups[category] = { { name = ..., paths = {...}, keys = {...} }, ... } in file order.
local groups, group_index = {}, {}
local cumulative, total_weight = {}, 0

if mixed then
  for _, c in ipairs(CATEGORIES) do
    groups[c] = {}
    group_index[c] = {}
  end
  for line in io.lines(file) do
    local c, g, p, k = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)$")
    assert(c and groups[c], "load_mix.lua: bad line in " .. file .. ": " .. line)
    local gi = group_index[c][g]
    if not gi then
      groups[c][#groups[c] + 1] = { name = g, paths = {}, keys = {} }
      gi = #groups[c]
      group_index[c][g] = gi
    end
    local grp = groups[c][gi]
    grp.paths[#grp.paths + 1] = p
    grp.keys[#grp.keys + 1] = k
  end

  local spec = os.getenv("LOAD_MIX_WEIGHTS")
  if spec == nil or spec == "" then
    spec = "listing=15,image=40,slice=30,volume=15"
  end
  for c, w in spec:gmatch("(%a+)=(%d+)") do
    assert(groups[c], "load_mix.lua: unknown category in LOAD_MIX_WEIGHTS: " .. c)
    w = tonumber(w)
    if w > 0 then
      assert(#groups[c] > 0, "load_mix.lua: no paths of category " .. c)
      total_weight = total_weight + w
      cumulative[#cumulative + 1] = { category = c, upto = total_weight }
    end
  end
  assert(total_weight > 0, "load_mix.lua: LOAD_MIX_WEIGHTS gives no positive weight: " .. spec)
end

-- Per-thread state: globals, so that done() can read them with thread:get().
sent = {}      -- requests sent, by category
bad = {}       -- answers neither 2xx nor 304, by category
statuses = {}  -- count by status code, for every non-2xx answer
badlog = {}    -- the first failures, "status path body"
tkeys = {}     -- distinct transform keys requested (set)

function init(args)
  local seed = tonumber(os.getenv("LOAD_MIX_SEED") or "") or 1
  math.randomseed(seed * 1000 + (id or 0))
  for _, c in ipairs(CATEGORIES) do
    sent[c] = 0
    bad[c] = 0
  end
end

if mixed then
  function request()
    local r = math.random() * total_weight
    local c = cumulative[#cumulative].category
    for _, e in ipairs(cumulative) do
      if r < e.upto then
        c = e.category
        break
      end
    end
    local gi = math.random(#groups[c])
    local grp = groups[c][gi]
    local pi = math.random(#grp.paths)
    sent[c] = sent[c] + 1
    local k = grp.keys[pi]
    if k ~= "-" then
      tkeys[k] = true
    end
    return wrk.format("GET", grp.paths[pi],
      { ["X-Request-Id"] = string.format("%s:%d:%d:%d", c, gi, pi, id or 0) })
  end

  function response(status, headers, body)
    if (status >= 200 and status < 300) or status == 304 then
      return
    end
    local rid = headers["x-request-id"] or headers["X-Request-Id"] or ""
    local c, gi, pi = rid:match("^(%a+):(%d+):(%d+):")
    local path = "(path unknown: no X-Request-Id in the answer)"
    if c and groups[c] and groups[c][tonumber(gi)] then
      path = groups[c][tonumber(gi)].paths[tonumber(pi)] or path
      bad[c] = bad[c] + 1
    else
      bad["unknown"] = (bad["unknown"] or 0) + 1
    end
    statuses[status] = (statuses[status] or 0) + 1
    if #badlog < 10 then
      local text = (body or ""):sub(1, 400):gsub("[%c]", " ")
      badlog[#badlog + 1] = string.format("BAD %d %s %s", status, path, text)
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local out = {
    string.format("requests=%d", summary.requests),
    string.format("duration_s=%.3f", summary.duration / 1e6),
    string.format("rps=%.1f", summary.requests / (summary.duration / 1e6)),
    string.format("bytes=%d", summary.bytes),
    string.format("p50_us=%d", latency:percentile(50)),
    string.format("p75_us=%d", latency:percentile(75)),
    string.format("p90_us=%d", latency:percentile(90)),
    string.format("p99_us=%d", latency:percentile(99)),
    string.format("max_us=%d", latency.max),
    string.format("status_errors=%d", e.status),
    string.format("connect=%d", e.connect),
    string.format("read=%d", e.read),
    string.format("write=%d", e.write),
    string.format("timeout=%d", e.timeout),
  }
  local lines = {}
  if mixed then
    local s, b, keys, nkeys, non2xx, codes = {}, {}, {}, 0, 0, {}
    for _, c in ipairs(CATEGORIES) do
      s[c], b[c] = 0, 0
    end
    for _, t in ipairs(threads) do
      for c, n in pairs(t:get("sent") or {}) do s[c] = s[c] + n end
      for c, n in pairs(t:get("bad") or {}) do
        b[c] = (b[c] or 0) + n
        non2xx = non2xx + n
      end
      for code, n in pairs(t:get("statuses") or {}) do codes[code] = (codes[code] or 0) + n end
      for k in pairs(t:get("tkeys") or {}) do
        if not keys[k] then
          keys[k] = true
          nkeys = nkeys + 1
        end
      end
      for _, l in ipairs(t:get("badlog") or {}) do lines[#lines + 1] = l end
    end
    out[#out + 1] = string.format("non2xx=%d", non2xx)
    out[#out + 1] = string.format("distinct_transform_keys=%d", nkeys)
    for _, c in ipairs(CATEGORIES) do
      out[#out + 1] = string.format("sent_%s=%d", c, s[c])
      out[#out + 1] = string.format("bad_%s=%d", c, b[c])
    end
    local cs = {}
    for code, n in pairs(codes) do cs[#cs + 1] = string.format("%d:%d", code, n) end
    table.sort(cs)
    out[#out + 1] = "codes=" .. (#cs > 0 and table.concat(cs, ",") or "none")
  end
  io.write("RESULT " .. table.concat(out, " ") .. "\n")
  for _, l in ipairs(lines) do io.write(l .. "\n") end
end
