"""``cjson``: lua-cjson 2.1.0 as Redis bundles it.

``cjson.encode`` is pure Lua (:data:`ENCODE`): it walks tables with
``next()`` exactly as the C library does, so object keys come out in the
same order as Redis's (both run Lua 5.1's tables), numbers are ``%.14g``,
'/' is escaped, an empty table is ``{}``, an array with holes gets nulls
unless it is excessively sparse (more than 10 and over twice as many slots
as items: an error, lua-cjson's defaults). ``cjson.decode`` is Python's JSON
parser building Lua tables (:func:`make_decode`); every number becomes a Lua
number and ``null`` is ``cjson.null``. Its error texts follow lua-cjson's
most common one ("Expected value but found invalid token at character N");
rarer malformed inputs are refused with that text too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Result = tuple[Any, ...]

ENCODE = r"""
local null = ...
local type, next, tostring, error, pcall, select = type, next, tostring, error, pcall, select
local format, gsub, floor, huge, concat = string.format, string.gsub, math.floor, math.huge, table.concat
local escapes = {['"'] = '\\"', ['\\'] = '\\\\', ['/'] = '\\/', ['\b'] = '\\b', ['\f'] = '\\f',
                 ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t'}
for i = 0, 31 do
  local c = string.char(i)
  if not escapes[c] then escapes[c] = format('\\u%04x', i) end
end
local function str(s)
  return '"' .. (gsub(s, '[%z\1-\31"\\/]', escapes)) .. '"'
end
local function num(n)
  if n ~= n or n == huge or n == -huge then
    error('Cannot serialise number: must not be NaN or Inf', 0)
  end
  return format('%.14g', n)
end
local encode
local function array_length(t)
  local max, items = 0, 0
  for k in next, t do
    if type(k) == 'number' and k > 0 and floor(k) == k then
      if k > max then max = k end
      items = items + 1
    else
      return -1
    end
  end
  if max > items * 2 and max > 10 then
    error('Cannot serialise table: excessively sparse array', 0)
  end
  return max
end
encode = function(v, depth, out)
  local t = type(v)
  if t == 'string' then out[#out + 1] = str(v)
  elseif t == 'number' then out[#out + 1] = num(v)
  elseif t == 'boolean' then out[#out + 1] = tostring(v)
  elseif t == 'nil' or v == null then out[#out + 1] = 'null'
  elseif t == 'table' then
    depth = depth + 1
    if depth > 1000 then error(format('Cannot serialise, excessive nesting (%d)', depth), 0) end
    local n = array_length(v)
    if n > 0 then
      out[#out + 1] = '['
      for i = 1, n do
        if i > 1 then out[#out + 1] = ',' end
        encode(v[i], depth, out)
      end
      out[#out + 1] = ']'
    else
      out[#out + 1] = '{'
      local first = true
      for k, val in next, v do
        local kt = type(k)
        if not first then out[#out + 1] = ',' end
        first = false
        if kt == 'string' then out[#out + 1] = str(k)
        elseif kt == 'number' then out[#out + 1] = '"' .. num(k) .. '"'
        else error('Cannot serialise ' .. kt .. ': table key must be a number or string', 0) end
        out[#out + 1] = ':'
        encode(val, depth, out)
      end
      out[#out + 1] = '}'
    end
  else
    error('Cannot serialise ' .. t .. ': type not supported', 0)
  end
end
return function(v)
  local out = {}
  local ok, err = pcall(encode, v, 0, out)
  if not ok then return nil, err end
  return concat(out), nil
end
"""


def make_decode(new_table: Callable[[], Any], null: Any) -> Callable[..., Result]:
    """``cjson.decode`` building Lua tables with ``new_table``; JSON null is ``null`` (cjson.null)."""

    def to_lua(value: Any) -> Any:
        t = type(value)
        if t is str:
            return value.encode("utf-8", "surrogateescape")
        if t is int:
            return value if -(1 << 53) <= value <= (1 << 53) else float(value)
        if t is list:
            table = new_table()
            for i, item in enumerate(value, 1):
                table[i] = to_lua(item)
            return table
        if t is dict:
            table = new_table()
            for k, item in value.items():
                table[k.encode("utf-8", "surrogateescape")] = to_lua(item)
            return table
        if value is None:
            return null
        return value

    def decode(*args: Any) -> Result:
        if len(args) != 1:
            return (b"bad argument #1 to 'decode' (expected 1 argument)",)
        text = args[0]
        if type(text) in (int, float):
            text = b"%.14g" % text
        if type(text) is not bytes:
            return (b"bad argument #1 to 'decode' (string expected, got %s)" % _tname(text),)
        try:
            value = json.loads(text.decode("utf-8", "surrogateescape"), strict=False)
        except json.JSONDecodeError as exc:
            return (b"Expected value but found invalid token at character %d" % (exc.pos + 1),)
        except RecursionError:
            return (b"Found too many nested data structures (1001) at character 1",)
        return None, 1, to_lua(value)

    return decode


def _tname(value: Any) -> bytes:
    return {type(None): b"no value", bool: b"boolean"}.get(type(value), b"table")
