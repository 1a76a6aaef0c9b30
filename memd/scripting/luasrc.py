"""The Lua side of the scripting environment: run once per Lua state, before any user script.

It receives a table of Python callables (``py``) and builds what Redis 7.0's
``scriptingInit`` builds in C: the ``redis`` table, Redis's ``pcall`` (which
hands back the ``err`` string of an error table), the error handler that
records the user script's line, and the sandbox. Redis locks its globals
with a patched Lua (read-only tables); stock Lua 5.1 has no such flag, so
here every script runs in an empty *proxy* environment whose metatable
refuses writes ("Attempt to modify a readonly table") and reads of unknown
names ("Script attempted to access nonexistent global variable"), and each
library table a script can reach is such a proxy too. ``pairs``, ``next``
and ``ipairs`` see through proxies. ``debug`` is kept only in this chunk's
upvalues (the kill hook and the error handler need it); ``os``, ``io``,
``package``, ``require``, ``dofile``, ``loadfile``, ``print``,
``getfenv``/``setfenv`` and ``module`` are not reachable; ``loadstring``
and ``load`` refuse precompiled chunks the way Redis's Lua does (it parses
them as text) and give what they load the sandbox as environment.
"""

BOOTSTRAP = r"""
local py = ...
local G = _G
local dbg = debug
local type, error, select, tostring, rawset, next, unpack, setmetatable, setfenv, getmetatable =
      type, error, select, tostring, rawset, next, unpack, setmetatable, setfenv, getmetatable
local raw_pcall, raw_loadstring, raw_load = pcall, loadstring, load
local string_byte = string.byte
local py_kill_check = py.kill_check

local real_of = setmetatable({}, {__mode = 'k'})   -- proxy -> the table it guards

local function readonly(t, k, v)
  error('Attempt to modify a readonly table', 2)
end

local function guard(t)
  local proxy = setmetatable({}, {__index = t, __newindex = readonly, __metatable = false})
  real_of[proxy] = t
  return proxy
end

-- calls from the script into memd's command table ------------------------------------------
-- redis.call and the library functions are Python callables (C functions to Lua, like Redis's): a
-- tail call to them keeps the script's frame, so errors still name the script's line. They raise
-- errors as Python exceptions, which py.unwrap turns back into an error table or message.
local py_unwrap = py.unwrap
local redis = {}
redis.call = py.call
redis.pcall = py.pcall
redis.sha1hex = py.sha1hex
redis.log = py.log
redis.setresp = py.setresp
redis.set_repl = py.set_repl
redis.replicate_commands = function() return true end
redis.acl_check_cmd = py.acl_check_cmd
redis.error_reply = function(...)
  local msg = ...
  if select('#', ...) ~= 1 or type(msg) ~= 'string' then
    return {err = 'ERR wrong number or type of arguments'}
  end
  if string_byte(msg, 1) ~= 45 then msg = '-' .. msg end
  return py.error_table(msg)
end
redis.status_reply = function(...)
  local msg = ...
  if select('#', ...) ~= 1 or type(msg) ~= 'string' then
    return {err = 'ERR wrong number or type of arguments'}
  end
  return {ok = msg}
end
redis.breakpoint = function() return false end
redis.debug = function() end
redis.LOG_DEBUG, redis.LOG_VERBOSE, redis.LOG_NOTICE, redis.LOG_WARNING = 0, 1, 2, 3
redis.REPL_NONE, redis.REPL_AOF, redis.REPL_SLAVE, redis.REPL_REPLICA, redis.REPL_ALL = 0, 1, 2, 2, 3
redis.REDIS_VERSION, redis.REDIS_VERSION_NUM = py.version, py.version_num

-- libraries ------------------------------------------------------------------------------------
local function lib(functions, extra)
  local t = {}
  for name, f in next, functions do t[name] = f end
  if extra then for k, v in next, extra do t[k] = v end end
  return t
end

local cjson = lib(py.cjson, {null = py.cjson_null, encode = py.cjson_encode, _NAME = 'cjson', _VERSION = '2.1.0'})
local cmsgpack = lib(py.cmsgpack, {_NAME = 'lua-cmsgpack', _VERSION = 'lua-cmsgpack 0.4.0',
  _COPYRIGHT = 'Copyright (C) 2012, Salvatore Sanfilippo', _DESCRIPTION = 'MessagePack C implementation for Lua'})
local bit = lib(py.bit)
local struct = lib(py.struct)

math.random = py.random
math.randomseed = py.randomseed

-- Redis's pcall: an error table's 'err' string is what the caller gets
local function pcall_result(ok, ...)
  if ok then return true, ... end
  local e = ...
  if type(e) == 'userdata' then e = py_unwrap(e, '') end
  if type(e) == 'table' then
    local m = e.err
    if type(m) == 'string' or type(m) == 'number' then return false, m end
  end
  return false, e
end
local function redis_pcall(...)
  return pcall_result(raw_pcall(...))
end

-- the sandbox ------------------------------------------------------------------------------------
local env = {}            -- what scripts see as globals (behind a proxy)
local sandbox             -- the proxy

local function proxy_next(t, k)
  return next(real_of[t] or t, k)
end
local function safe_pairs(t)
  return proxy_next, t, nil
end
local function ipairs_step(t, i)
  i = i + 1
  local v = t[i]
  if v ~= nil then return i, v end
end
local function safe_ipairs(t)
  return ipairs_step, t, 0
end

local function sandboxed(f, e)
  if f then setfenv(f, sandbox) end
  return f, e
end
local function safe_loadstring(s, name)
  if type(s) == 'string' and string_byte(s, 1) == 27 then
    return sandboxed(raw_loadstring(' ' .. s, name or s))
  end
  return sandboxed(raw_loadstring(s, name))
end
local function safe_load(f, name)
  local first = true
  local function reader()
    local piece = f()
    if first and type(piece) == 'string' and piece ~= '' then
      first = false
      if string_byte(piece, 1) == 27 then return ' ' .. piece end
    end
    return piece
  end
  return sandboxed(raw_load(reader, name))
end

for _, name in next, {'assert', 'collectgarbage', 'error', 'gcinfo', 'getmetatable', 'newproxy',
                      'rawequal', 'rawget', 'rawset', 'select', 'setmetatable', 'tonumber', 'tostring',
                      'type', 'unpack', 'xpcall', '_VERSION'} do
  env[name] = G[name]
end
env.next = proxy_next
env.pairs = safe_pairs
env.ipairs = safe_ipairs
env.pcall = redis_pcall
env.loadstring = safe_loadstring
env.load = safe_load
env.string = guard(string)
env.math = guard(math)
env.table = guard(table)
local coroutine_api = lib(coroutine)
env.coroutine = guard(coroutine_api)
env.redis = guard(redis)
env.cjson = guard(cjson)
env.cmsgpack = guard(cmsgpack)
env.bit = guard(bit)
env.struct = guard(struct)

-- strings' methods ("x"):upper() go through the guarded table, and their metatable is read-only too
local string_mt = getmetatable('')
string_mt.__index = env.string
string_mt.__metatable = guard(string_mt)

-- a script's error as memd reports it, found on a stack where at(0) is the frame that raised (at(n): n
-- frames further out): skip memd's own Lua wrappers (Redis's are C) to the script's frame, and say where
local function describe(err, at)
  local level, i = 0, at(0)
  if i and i.what == 'C' then level = 1; i = at(1) end
  while i and i.source ~= '@user_script' do
    level = level + 1
    i = at(level)
  end
  if type(err) == 'userdata' then   -- raised by a Python function called straight from the script
    local where = ''
    if i and level == 1 then where = 'user_script:' .. tostring(i.currentline) .. ': ' end
    err = py_unwrap(err, where)
  end
  if type(err) ~= 'table' then
    err = {err = 'ERR ' .. tostring(err)}
  end
  if i then
    err.source = i.source
    err.line = i.currentline
  end
  return err
end

local function error_handler(err)
  -- the raiser is 2 frames out of error_handler, so 4 out of at (at, describe, error_handler, raiser);
  -- no tail calls here, which would drop those frames
  local function at(n)
    local i = dbg.getinfo(n + 4, 'nSl')
    return i
  end
  local e = describe(err, at)
  return e
end
env.__redis__err__handler = error_handler
setmetatable(env, {__index = function(t, k)
  error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
end, __newindex = readonly, __metatable = false})
sandbox = guard(env)
rawset(env, '_G', sandbox)

-- the kill hook: every 100000 instructions ask memd whether SCRIPT KILL was called
local kill_message = 'ERR Script killed by user with SCRIPT KILL...'
local function kill_hook()
  if py_kill_check() then
    dbg.sethook(kill_hook, 'l')   -- keep failing on every line: pcall cannot swallow it
    local i = dbg.getinfo(2, 'S')
    if i and i.source == '@user_script' then   -- (not in the error handler or in run below)
      error({err = kill_message})
    end
  end
end

-- running scripts: in a coroutine, so that a script past its time on the event loop can pause (memd's
-- count hook yields it, see memd.scripting.runtime) and go on in another thread. One coroutine runs
-- script after script; an error, a kill or a script's own yield ends it and the next run makes another.
local co_create, co_resume, co_yield = coroutine.create, coroutine.resume, coroutine.yield
local DONE = {}           -- what the coroutine yields when a script returned
local runner              -- the coroutine scripts run in
local function body(f)
  while true do
    local r = f()         -- (one value: Redis's lua_pcall asks for one result)
    f = co_yield(DONE, r)
  end
end

-- describe's work on the stack a failed script leaves in its (dead) coroutine: level 0 is the function
-- that raised
local function error_of(co, err)
  return describe(err, function(n) return dbg.getinfo(co, n, 'nSl') end)
end

-- what one resume came to: true, value (returned); false, error table (raised); nil (paused)
local function outcome(ok, tag, value)
  if ok then
    if tag == DONE then return true, value end
    return nil, false
  end
  local co = runner
  runner = nil
  return false, error_of(co, tag)
end

-- a new coroutine for scripts: its address (memd installs its own count hook on it) after setting the
-- Lua kill hook on it, which memd's hook hands over to when SCRIPT KILL comes
local function new_runner()
  runner = co_create(body)
  dbg.sethook(runner, kill_hook, '', 100000)
  return tostring(runner)
end

-- start(f, numkeys, keys..., args...): KEYS and ARGV are built here (cheaper than two tables from
-- Python; one {...} split in two: half the cost of a select() per value); start(f, keys, argv) for
-- many (a C call takes a few thousand arguments at most)
local function start(f, n, ...)
  local keys, argv
  if type(n) == 'table' then
    keys, argv = n, ...
  else
    keys, argv = {...}, {}   -- (every value is a string: # is exact)
    for i = n + 1, #keys do
      argv[i - n] = keys[i]
      keys[i] = nil
    end
  end
  rawset(env, 'KEYS', keys)
  rawset(env, 'ARGV', argv)
  return outcome(co_resume(runner, f))
end

local function resume()
  return outcome(co_resume(runner))
end

-- a script that yielded on its own (coroutine.yield outside a coroutine of its own): Redis's error
local function yielded()
  local co = runner
  runner = nil
  return false, error_of(co, 'attempt to yield across metamethod/C-call boundary')
end

-- coroutine.running() outside a script's own coroutines is nil, as in Redis
local co_running = coroutine.running
coroutine_api.running = function()
  local co = co_running()
  if co == runner then return nil end
  return co
end

local function compile(body, name)
  local f, e = raw_loadstring(body, name)
  if f then setfenv(f, sandbox) end
  return f, e
end

-- strip the state's real globals: nothing a sandboxed function can reach leads back to them
for _, name in next, {'os', 'io', 'package', 'require', 'module', 'dofile', 'loadfile', 'print', 'debug',
                      'getfenv', 'setfenv', 'python'} do
  G[name] = nil
end
return new_runner, start, resume, yielded, compile
"""
