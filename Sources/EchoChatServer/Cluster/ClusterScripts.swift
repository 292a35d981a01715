/// The Lua the cluster link runs in Redis (`EVAL`): each script does its
/// reads and writes in one step, so no other server's command falls in
/// between. Nick keys (`claimScript`, `releaseScript`, `refreshScript`) and
/// room membership (`MembershipKeys`: the scripts that begin with
/// `membershipFunctions`). `ClusterScriptTests` runs the membership ones by
/// hand on a real Redis.
extension ClusterLink {
    /// KEYS: the nick's key, this node's presence key; ARGV: node,
    /// membership lifetime, holder, TTL (ms) if the presence key has none,
    /// channel, event, the event's membership operations. Takes the nick if
    /// nobody holds it (SET NX), expiring just before this node's presence
    /// (so a lost node's nicks are free by the time it is found lost), and
    /// only then changes the membership keys and publishes the claim: 1, or
    /// 0 if taken. (10 ms before: two calls in one script may read Redis's
    /// clock a millisecond apart.)
    static let claimScript = membershipFunctions + """
        local ttl = redis.call('PTTL', KEYS[2])
        if ttl <= 0 then ttl = tonumber(ARGV[4]) else ttl = math.max(1, ttl - 10) end
        if not redis.call('SET', KEYS[1], ARGV[3], 'NX', 'PX', ttl) then return 0 end
        apply(7)
        redis.call('PUBLISH', ARGV[5], ARGV[6])
        return 1
        """
    /// What every script that changes the membership keys (`MembershipKeys`)
    /// begins with. ARGV[1]: the node, ARGV[2]: the keys' lifetime (ms).
    /// `drop` takes a client of the node out of its room (its nick back),
    /// `dropAll` every client of it; `apply(first)` runs the operations
    /// from ARGV[first] on, five arguments each, telling the node K for
    /// each `hello` and `join` on its own channel (`to:NODE`), before the
    /// events are published.
    /// What the scripts that only read the membership keys begin with
    /// (ARGV as `membershipFunctions`'): a `/who` need not carry the
    /// functions that change them.
    static let readerHeader = """
        local P = '\(prefix)'
        local node = ARGV[1]

        """
    static let membershipFunctions = """
        local P = '\(prefix)'
        local node, life = ARGV[1], tonumber(ARGV[2])
        local index = P .. 'in:' .. node
        local function drop(id)
          local key = redis.call('HGET', index, id)
          if not key then return false end
          local room, field = P .. 'who:' .. key, node .. ' ' .. id
          local nick = redis.call('HGET', room, field)
          redis.call('HDEL', room, field)
          if redis.call('HLEN', room) == 0 then redis.call('HDEL', P .. 'rooms', key) end
          redis.call('HDEL', index, id)
          return nick
        end
        local function dropAll(keep)
          for _, id in ipairs(redis.call('HKEYS', index)) do
            if not (keep and keep[id]) then drop(id) end
          end
        end
        local function put(id, key, spelling, nick)
          local room = P .. 'who:' .. key
          redis.call('HSET', room, node .. ' ' .. id, nick)
          redis.call('HSET', index, id, key)
          redis.call('HSETNX', P .. 'rooms', key, spelling)
          redis.call('PEXPIRE', room, life)
          redis.call('PEXPIRE', index, life)
          redis.call('PEXPIRE', P .. 'rooms', life)
          return redis.call('HLEN', room)
        end
        local function apply(first)
          for i = first, #ARGV - 4, 5 do
            local kind, id, key, spelling, nick = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
            if kind == 'out' then drop(id)
            elseif kind == 'keep' then
            elseif kind == 'nick' then
              local at = redis.call('HGET', index, id)
              if at then redis.call('HSET', P .. 'who:' .. at, node .. ' ' .. id, nick) end
            else
              local was = drop(id)
              if kind == 'join' then nick = was end
              if nick then
                local count = put(id, key, spelling, nick)
                if kind ~= 'here' then redis.call('PUBLISH', P .. 'to:' .. node, 'count ' .. id .. ' ' .. count) end
              end
            end
          end
        end

        """
    /// ARGV: node, lifetime, channel, events, 1 to replace the node's
    /// membership first (an announce: its entries go but for those the
    /// `keep` operations name) or 0, then operations. Changes the
    /// membership keys and publishes the events, in one step.
    static let publishScript = membershipFunctions + """
        if ARGV[5] == '1' then
          local keep = {}
          for i = 6, #ARGV - 4, 5 do
            if ARGV[i] == 'keep' then keep[ARGV[i + 1]] = true end
          end
          dropAll(keep)
        end
        apply(6)
        if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
        return 1
        """
    /// ARGV: the node found lost, lifetime. Whoever takes it off the list
    /// of nodes takes its clients out of the membership keys and announces
    /// the loss, in one step: 1, or 0 if another survivor did.
    static let lostScript = membershipFunctions + """
        if redis.call('SREM', P .. 'nodes', node) == 0 then return 0 end
        dropAll()
        redis.call('DEL', index)
        redis.call('PUBLISH', P .. 'cluster', 'lost ' .. node)
        return 1
        """
    /// ARGV: this node, lifetime. A clean stop: its clients, presence and
    /// list entry go, and the others hear goodbye, in one step.
    static let goodbyeScript = membershipFunctions + """
        dropAll()
        redis.call('DEL', index, P .. 'node:' .. node)
        redis.call('SREM', P .. 'nodes', node)
        redis.call('PUBLISH', P .. 'cluster', 'bye ' .. node)
        return 1
        """
    /// ARGV: this node, lifetime. The heartbeat's part for membership: the
    /// keys that hold this node's clients live on.
    static let membershipRefreshScript = membershipFunctions + """
        local seen = {}
        for _, key in ipairs(redis.call('HVALS', index)) do
          if not seen[key] then
            seen[key] = true
            redis.call('PEXPIRE', P .. 'who:' .. key, life)
          end
        end
        redis.call('PEXPIRE', index, life)
        redis.call('PEXPIRE', P .. 'rooms', life)
        return 1
        """
    /// ARGV: node, lifetime, connection id, room (lower-cased). `/who`:
    /// the room's nicks, published on the node's channel.
    static let whoScript = readerHeader + """
        local nicks = redis.call('HVALS', P .. 'who:' .. ARGV[4])
        redis.call('PUBLISH', P .. 'to:' .. node, 'who ' .. ARGV[3] .. ' ' .. table.concat(nicks, ' '))
        return 1
        """
    /// ARGV: node, lifetime, connection id. `/rooms`: each room, its
    /// spelling and head count, published on the node's channel.
    static let roomsScript = readerHeader + """
        local parts = {'rooms', ARGV[3]}
        local rooms = redis.call('HGETALL', P .. 'rooms')
        for i = 1, #rooms, 2 do
          local count = redis.call('HLEN', P .. 'who:' .. rooms[i])
          if count > 0 then
            parts[#parts + 1] = rooms[i]
            parts[#parts + 1] = rooms[i + 1]
            parts[#parts + 1] = tostring(count)
          end
        end
        redis.call('PUBLISH', P .. 'to:' .. node, table.concat(parts, ' '))
        return 1
        """
    /// KEYS: nick keys; ARGV: their holders. Deletes each that still names
    /// its holder (a nick freed; a key taken since by another stays).
    static let releaseScript = """
        local freed = 0
        for i, key in ipairs(KEYS) do
          if redis.call('GET', key) == ARGV[i] then redis.call('DEL', key); freed = freed + 1 end
        end
        return freed
        """
    /// KEYS: this node's presence key, then its clients' nick keys; ARGV:
    /// TTL (ms) if the presence key has none, then the nicks' holders.
    /// Renews each key that names its holder, and sets each that nobody
    /// holds (a nick given after an outage, or by a `rename`), to expire
    /// just before the presence key (as `claimScript`); one held by another
    /// client is left to the clash rule (§6). Returns how many are held by
    /// others.
    static let refreshScript = """
        local ttl = redis.call('PTTL', KEYS[1])
        if ttl <= 0 then ttl = tonumber(ARGV[1]) else ttl = math.max(1, ttl - 10) end
        local others = 0
        for i = 2, #KEYS do
          local held = redis.call('GET', KEYS[i])
          if held == ARGV[i] then redis.call('PEXPIRE', KEYS[i], ttl)
          elseif not held then redis.call('SET', KEYS[i], ARGV[i], 'PX', ttl)
          else others = others + 1 end
        end
        return others
        """
}
