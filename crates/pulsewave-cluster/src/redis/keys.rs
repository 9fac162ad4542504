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
