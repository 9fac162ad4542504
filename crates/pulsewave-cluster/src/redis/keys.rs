//! Key and channel names, and the Lua scripts that change them atomically.
//! docs/cluster.md lists them with their lifetimes.

/// Set of node ids (cleaned lazily: ids whose `pw:node:<id>` expired are
/// removed by whoever lists the nodes).
pub(crate) const NODES: &str = "pw:nodes";
/// Set of room names (cleaned lazily like [`NODES`]).
pub(crate) const ROOMS: &str = "pw:rooms";
/// Prefix of node registry keys.
pub(crate) const NODE_PREFIX: &str = "pw:node:";

/// `pw:node:<id>`: the node's [`NodeInfo`](crate::NodeInfo) as JSON, signed.
pub(crate) fn node(id: &str) -> String {
    format!("{NODE_PREFIX}{id}")
}

/// Channel of messages for sessions a node runs: relays publish here.
pub(crate) fn node_in(id: &str) -> String {
    format!("{NODE_PREFIX}{id}:in")
}

/// Channel of messages for relays on a node: owners publish here.
pub(crate) fn node_out(id: &str) -> String {
    format!("{NODE_PREFIX}{id}:out")
}

/// `pw:room:<name>:owner`: the signed claim of the node the room lives on.
pub(crate) fn room_owner(name: &str) -> String {
    format!("pw:room:{name}:owner")
}

/// `pw:room:<name>:info`: the room as [`ClusterRoom`](crate::ClusterRoom) JSON, signed.
pub(crate) fn room_info(name: &str) -> String {
    format!("pw:room:{name}:info")
}

// Claims (`pw:room:<name>:owner`) are signed messages (crate::trust) whose
// header names the holder: `pw1 claim <node id> ...`. The scripts read the
// holder from it but cannot check the signature: they hand the claim and
// the holder's node record back to the node, which verifies both before it
// relays a client there (`R` of PLACE, the answer of ASSERT) and takes the
// room over with TAKEOVER if either does not verify.

/// Placement at WebSocket upgrade.
///
/// KEYS: owner key. ARGV: this node's id, claim TTL (ms), node key prefix,
/// `1` if this node may claim, this node's signed claim. Answers `{'L'}`
/// (this node owns the room, claim taken or refreshed), `{'R', claim, node
/// record}` (another node with a registry entry holds it: to verify), `{'D'}`
/// (nobody holds it and this node may not claim).
pub(crate) const PLACE: &str = r#"
local owner = redis.call('GET', KEYS[1])
local holder = owner and string.match(owner, '^pw1 claim ([^ ]+) ')
if holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[2])
  return {'L'}
end
if holder then
  local node = redis.call('GET', ARGV[3] .. holder)
  if node then
    return {'R', owner, node}
  end
end
if ARGV[4] ~= '1' then
  return {'D'}
end
redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[2])
return {'L'}
"#;

/// Claims (or keeps) a room open on this node and writes its record.
///
/// KEYS: owner key, info key, rooms set. ARGV: this node's id, TTL (ms),
/// node key prefix, signed room record, room name, signed claim. Takes the
/// claim if it is free, ours, or held by a node without a registry entry;
/// answers `{}` then, or `{claim, node record}` of the other holder, for the
/// node to verify.
pub(crate) const ASSERT: &str = r#"
local owner = redis.call('GET', KEYS[1])
local holder = owner and string.match(owner, '^pw1 claim ([^ ]+) ')
if holder and holder ~= ARGV[1] then
  local node = redis.call('GET', ARGV[3] .. holder)
  if node then
    return {owner, node}
  end
end
redis.call('SET', KEYS[1], ARGV[6], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[5])
return {}
"#;

/// Replaces a claim that did not verify, if it is still the one read.
///
/// KEYS: owner key, info key, rooms set. ARGV: the claim read, this node's
/// signed claim, TTL (ms), signed room record or `''`, room name. Answers 1
/// if replaced, 0 if the claim changed meanwhile.
pub(crate) const TAKEOVER: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[3])
  redis.call('SADD', KEYS[3], ARGV[5])
end
return 1
"#;

/// Releases a room this node owns: deletes claim and record.
///
/// KEYS: owner key, info key, rooms set. ARGV: this node's id, room name.
pub(crate) const RELEASE: &str = r#"
local owner = redis.call('GET', KEYS[1])
if owner and string.match(owner, '^pw1 claim ([^ ]+) ') == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[2])
  return 1
end
return 0
"#;

// ----------------------------------------------------------------------
// Webhook journals

/// Set of the webhook journal keys that may exist (cleaned by whoever finds
/// a journal that no longer exists).
pub(crate) const WEBHOOK_JOURNALS: &str = "pw:webhook-journals";
/// Prefix of webhook journal keys.
pub(crate) const WEBHOOK_PREFIX: &str = "pw:webhooks:";

/// `pw:webhooks:<node id>:<incarnation>:<room>`: the webhook events of
/// `room` queued on node `node` and not yet delivered, oldest first, each a
/// signed message (`crate::trust::Kind::Webhook`). `incarnation` is the
/// writing process's start time (Unix ms) for its own events, and that
/// start time, `-` and a random number for the journal of a dead node it
/// claimed. Node ids and incarnations hold no `:`, so the key parses back
/// ([`parse_webhook_journal`]); the room name is the rest.
pub(crate) fn webhook_journal(node: &str, incarnation: &str, room: &str) -> String {
    format!("{WEBHOOK_PREFIX}{node}:{incarnation}:{room}")
}

/// The node id, the writing process's start time and the room of a journal
/// key, if it is one.
pub(crate) fn parse_webhook_journal(key: &str) -> Option<(&str, u64, &str)> {
    let rest = key.strip_prefix(WEBHOOK_PREFIX)?;
    let (node, rest) = rest.split_once(':')?;
    let (incarnation, room) = rest.split_once(':')?;
    let started = incarnation.split('-').next()?.parse().ok()?;
    Some((node, started, room))
}

/// Appends an entry to a webhook journal.
///
/// KEYS: journal, journal set. ARGV: entry, TTL (ms).
pub(crate) const JOURNAL_APPEND: &str = r#"
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
return 1
"#;

/// Removes an entry from a webhook journal, and the journal from the set
/// once it is empty.
///
/// KEYS: journal, journal set. ARGV: entry.
pub(crate) const JOURNAL_REMOVE: &str = r#"
local n = redis.call('LREM', KEYS[1], 1, ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], KEYS[1])
end
return n
"#;

/// One page of the journal set: `{cursor, key, key, ...}`.
///
/// KEYS: journal set. ARGV: cursor, count.
pub(crate) const JOURNAL_SCAN: &str = r#"
local page = redis.call('SSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local out = {page[1]}
for _, k in ipairs(page[2]) do
  out[#out + 1] = k
end
return out
"#;

/// Claims the journal of a dead writer: renames it to a key of the
/// claiming node, so that exactly one node gets it. Refused while the
/// writer's registry entry exists, unless `ARGV[2]` is `0` (the entry that
/// exists is a later process with the same node id, verified by the
/// caller). A journal that no longer exists leaves the set.
///
/// KEYS: journal, new key, journal set. ARGV: writer's registry key, `1` to
/// require it absent. Answers 1 if claimed, 0 otherwise.
pub(crate) const JOURNAL_CLAIM: &str = r#"
if ARGV[2] == '1' and redis.call('EXISTS', ARGV[1]) == 1 then
  return 0
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[3], KEYS[1])
  return 0
end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[3], KEYS[1])
redis.call('SADD', KEYS[3], KEYS[2])
return 1
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_journal_keys_parse_back() {
        let key = webhook_journal("node-a", "1764060000000", "my:room");
        assert_eq!(key, "pw:webhooks:node-a:1764060000000:my:room");
        assert_eq!(
            parse_webhook_journal(&key),
            Some(("node-a", 1_764_060_000_000, "my:room"))
        );
        let claimed = webhook_journal("node-b", "17-00ff", "r");
        assert_eq!(parse_webhook_journal(&claimed), Some(("node-b", 17, "r")));
        assert_eq!(parse_webhook_journal("pw:webhooks:node-a:x:r"), None);
        assert_eq!(parse_webhook_journal("pw:webhooks:node-a"), None);
        assert_eq!(parse_webhook_journal("pw:room:r:info"), None);
    }
}
