-- SPDX-License-Identifier: LGPL-2.1-or-later
--
-- deltachat-push.lua: a Dovecot mail_lua script, run in the user's own
-- IMAP process (as the mail user) at every login and logout.  Install it
-- as /etc/dovecot/deltachat-push.lua (mode 644); the dovecot.conf part
-- that loads it is examples/dovecot-2.3-metadata.conf (Debian 12) or
-- examples/dovecot-2.4-metadata.conf (Debian 13).
--
-- Why it exists.  Delta Chat core 2.60 and later store a device's push
-- token (SETMETADATA "INBOX" (/private/devicetoken ...)) only on a server
-- that answers GETMETADATA "" (/shared/vendor/deltachat/maxsmtprecipients)
-- with a number, and every device of an account writes that same key:
-- Dovecot's file dict keeps only the last one.  So, at login:
--
--  1. Every device token in the user's dict file is recorded in a file
--     beside it, <dict>.devices (0600, "<unix time> <token>" per line,
--     the token as the dict holds it), which deltachat-push
--     --dovecot-metadata=<dict> reads at delivery as well as the dict
--     itself.  The same happens at logout.  A device's login sees the
--     token the previous device left, its logout its own; so devices that
--     register one after the other are all kept.
--  2. If the user's server metadata has no maxsmtprecipients, or another
--     value than the site's, it is set with doveadm, run as the mail user
--     (this process's user) before the client's first command, so a user
--     who never logged in before gets the number on the first login.
--
-- The common login only reads two small files: the devices file is
-- rewritten when a token is new or its time is a day old, and doveadm runs
-- only when the value is missing or wrong.  Nothing here can refuse a
-- login: every problem is logged (Dovecot's log, as an error) and the
-- login goes on.
--
-- Settings (all optional), in dovecot.conf, see the metadata examples:
--   deltachat_push_maxsmtprecipients  the number served (default 1000,
--       Postfix's smtpd_recipient_limit default: core also uses it as its
--       limit of recipients per message, so make it the site's limit)
--   deltachat_push_dict  the dict file, relative to the home (default
--       dovecot-attributes; it must be the mail_attribute_dict file)

local settings = {
  deltachat_push_maxsmtprecipients = "1000",
  deltachat_push_dict = "dovecot-attributes",
}
local dovecot24 = false

local DOVEADM = "/usr/bin/doveadm"
local LIMIT_KEY = "/shared/vendor/deltachat/maxsmtprecipients"
-- what the server metadata key becomes in the dict file
local LIMIT_DICT_KEY = "^shared/[^/]+/vendor/vendor%.dovecot/pvt/server/vendor/deltachat/maxsmtprecipients$"
local FILE_MAX = 1024 * 1024 -- as deltachat-push: a real dict is small
local TOKENS_MAX = 32 -- tokens kept in the devices file
local TOKEN_MAX = 8192 -- bytes, escaped; deltachat-push checks each token
local MAX_AGE = 90 * 24 * 3600 -- not seen for 90 days: dropped
local REFRESH = 24 * 3600 -- a known token's time is rewritten daily

-- Dovecot 2.4 passes mail_lua { lua_settings { ... } } here as a table;
-- 2.3 passes nothing (its settings come from plugin { }).
function script_init(args)
  if type(args) == "table" then
    dovecot24 = true
    for k, v in pairs(args) do
      settings[k] = v
    end
  end
  return 0
end

local function log_error(user, text)
  io.stderr:write("deltachat-push.lua: ", tostring(user.username), ": ", text, "\n")
end

local function setting(user, name)
  if not dovecot24 then
    local v = user:plugin_getenv(name)
    if v ~= nil and v ~= "" then
      return v
    end
  end
  return settings[name]
end

-- The file's content; nil when it does not exist (or cannot be opened),
-- false when it is larger than FILE_MAX.
local function read_file(path)
  local f = io.open(path, "rb")
  if f == nil then
    return nil
  end
  local data = f:read(FILE_MAX + 1)
  f:close()
  if data ~= nil and #data > FILE_MAX then
    return false
  end
  return data or ""
end

local function is_token_key(key)
  return key:match("^priv/[^/]+/devicetoken$") ~= nil or key:match("^shared/[^/]+/devicetoken$") ~= nil
end

-- The dict file: line pairs, key then value, tab-escaped (a token never
-- holds an escape; deltachat-push unescapes and checks it anyway).
local function parse_dict(data)
  local tokens, limit, key = {}, nil, nil
  for line in data:gmatch("([^\n]*)\n") do
    line = line:gsub("\r$", "")
    if key == nil then
      key = line
    else
      if is_token_key(key) and #line > 0 and #line <= TOKEN_MAX then
        -- as many as are kept: more would be new at every login
        if #tokens < TOKENS_MAX then
          tokens[#tokens + 1] = line
        end
      elseif key:match(LIMIT_DICT_KEY) then
        limit = line
      end
      key = nil
    end
  end
  return tokens, limit
end

-- The devices file: "<unix time> <token>" per line.
local function parse_devices(data)
  local list, times = {}, {}
  for line in data:gmatch("([^\n]*)\n") do
    local t, token = line:match("^(%d+) (.+)$")
    -- at most 12 digits: a time, never a number too big for %d
    if t ~= nil and #t <= 12 and times[token] == nil and #token <= TOKEN_MAX then
      list[#list + 1] = token
      times[token] = tonumber(t)
    end
  end
  return list, times
end

-- Newest first; among equal times, the tokens just found in the dict
-- first, then the file's order: the order deltachat-push pushes them in.
local function write_devices(user, path, list, times, rank, now)
  -- what another session of the user wrote since we read the file:
  -- kept, so only two writes in the same instant can lose one
  local cur_list, cur_times = parse_devices(read_file(path) or "")
  for i, token in ipairs(cur_list) do
    if times[token] == nil then
      list[#list + 1] = token
      times[token] = cur_times[token]
      rank[token] = #list + i
    elseif cur_times[token] > times[token] then
      times[token] = cur_times[token]
    end
  end
  table.sort(list, function(a, b)
    if times[a] ~= times[b] then
      return times[a] > times[b]
    end
    return rank[a] < rank[b]
  end)
  local out = {}
  for _, token in ipairs(list) do
    if #out < TOKENS_MAX and now - times[token] < MAX_AGE then
      out[#out + 1] = string.format("%d %s\n", times[token], token)
    end
  end
  -- a new file renamed over the old one: a reader never sees half of it;
  -- the session id keeps two logins of one user apart.  The IMAP
  -- process's umask (0077) makes it 0600.
  local tmp = path .. ".tmp." .. tostring(user.session_id):gsub("[^%w]", "_")
  local f, err = io.open(tmp, "wb")
  if f == nil then
    log_error(user, "cannot write " .. tmp .. ": " .. tostring(err))
    return
  end
  local ok, werr = f:write(table.concat(out))
  local closed, cerr = f:close()
  if not ok or not closed then
    log_error(user, "cannot write " .. tmp .. ": " .. tostring(werr or cerr))
    os.remove(tmp)
    return
  end
  local renamed, rerr = os.rename(tmp, path)
  if not renamed then
    log_error(user, "cannot rename " .. tmp .. ": " .. tostring(rerr))
    os.remove(tmp)
  end
end

-- Record the dict's device tokens; return the dict's maxsmtprecipients
-- (nil when absent) and whether the dict could be read (a missing one
-- can: it holds nothing yet).
local function catch_tokens(user)
  local home = user.home
  if home == nil or home == "" then
    return nil, false
  end
  local dict = home .. "/" .. setting(user, "deltachat_push_dict")
  local data = read_file(dict)
  if data == nil then
    return nil, true
  elseif data == false then
    log_error(user, dict .. " is larger than 1 MiB, not read")
    return nil, false
  end
  local found, limit = parse_dict(data)
  if #found == 0 then
    return limit, true
  end
  local path = dict .. ".devices"
  local list, times = parse_devices(read_file(path) or "")
  local now = os.time()
  local changed = false
  local rank = {}
  for i, token in ipairs(list) do
    rank[token] = #found + i
  end
  for i, token in ipairs(found) do
    local seen = times[token]
    if seen == nil then
      list[#list + 1] = token
    end
    rank[token] = i
    if seen == nil or seen > now or now - seen >= REFRESH then
      times[token] = now
      changed = true
    end
  end
  if changed then
    write_devices(user, path, list, times, rank, now)
  end
  return limit, true
end

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- The configuration this Dovecot runs with, also when started with -c:
-- 2.4 puts the file in CONFIG_FILE; 2.3 the config socket, whose
-- directory (base_dir) holds a dovecot.conf symlink to the file.
local function dovecot_config()
  local conf = os.getenv("CONFIG_FILE")
  if conf == nil or conf == "" then
    return "/etc/dovecot/dovecot.conf"
  end
  if conf:match("/config$") then
    return conf:sub(1, -#"config" - 1) .. "dovecot.conf"
  end
  return conf
end

-- doveadm as this process's user (the mail user), with a clean
-- environment (an inherited one makes doveconf fail) and no userdb lookup
-- (the mail user cannot reach the auth-userdb socket); the login waits
-- for it, 10 s at most.
local function set_limit(user, value)
  local env = "/usr/bin/timeout 10 /usr/bin/env -i USER=" .. quote(user.username) .. " HOME="
    .. quote(user.home) .. " "
  local cmd
  if dovecot24 then
    cmd = env .. DOVEADM .. " -c " .. quote(dovecot_config()) .. " -o mail_home=" .. quote(user.home)
      .. " mailbox metadata set --no-userdb-lookup -s '' " .. LIMIT_KEY .. " " .. value
  else
    cmd = env .. DOVEADM .. " -c " .. quote(dovecot_config()) .. " mailbox metadata set -s '' " .. LIMIT_KEY
      .. " " .. value
  end
  local p = io.popen(cmd .. " </dev/null 2>&1")
  if p == nil then
    log_error(user, "cannot run " .. DOVEADM)
    return
  end
  local out = p:read("a") or ""
  local ok, _, code = p:close()
  if not ok then
    log_error(user, "setting " .. LIMIT_KEY .. " failed (" .. tostring(code) .. "): "
      .. out:gsub("\n", " "):sub(1, 400))
  end
end

function mail_user_created(user)
  local limit, known = catch_tokens(user)
  local want = tostring(setting(user, "deltachat_push_maxsmtprecipients"))
  if not want:match("^%d+$") then
    log_error(user, "deltachat_push_maxsmtprecipients is not a number: " .. want)
  elseif known and limit ~= want then
    set_limit(user, want)
  end
  -- anything else and Dovecot never calls mail_user_deinit_pre
  return 0, ""
end

function mail_user_deinit_pre(user)
  catch_tokens(user)
end
