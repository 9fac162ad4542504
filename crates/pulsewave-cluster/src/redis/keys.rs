//! Key and channel names, and the Lua scripts that change them atomically.
//! docs/cluster.md lists them with their lifetimes.

/// Set of node ids (cleaned lazily: ids whose `pw:node:<id>` expired are
/// removed by whoever lists the nodes).
pub(crate) const NODES: &str = "pw:nodes";
/// Set of room names (cleaned lazily like [`NODES`]).
pub(crate) const ROOMS: &str = "pw:rooms";
/// Prefix of node registry keys.
pub(crate) const NODE_PREFIX: &str = "pw:node:";

/// `pw:node:<id>`: the node's [`NodeInfo`](crate::NodeInfo) as JSON.
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

/// `pw:room:<name>:owner`: id of the node the room lives on.
pub(crate) fn room_owner(name: &str) -> String {
    format!("pw:room:{name}:owner")
}

/// `pw:room:<name>:info`: the room as [`ClusterRoom`](crate::ClusterRoom) JSON.
pub(crate) fn room_info(name: &str) -> String {
    format!("pw:room:{name}:info")
}

/// Placement at WebSocket upgrade.
///
/// KEYS: owner key. ARGV: this node's id, claim TTL (ms), node key prefix,
/// `1` if this node may claim. Answers `L` (this node owns the room, claim
/// taken or refreshed), `R<node json>` (another live node owns it), `D`
/// (nobody live owns it and this node may not claim).
pub(crate) const PLACE: &str = r#"
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 'L'
end
if owner then
  local node = redis.call('GET', ARGV[3] .. owner)
  if node then
    return 'R' .. node
  end
end
if ARGV[4] ~= '1' then
  return 'D'
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 'L'
"#;

/// Claims (or keeps) a room open on this node and writes its record.
///
/// KEYS: owner key, info key, rooms set. ARGV: this node's id, TTL (ms),
/// node key prefix, room record JSON, room name. Takes the claim if it is
/// free, ours, or held by a node whose registry entry expired; answers `''`
/// then, or the id of the live node that holds it.
pub(crate) const ASSERT: &str = r#"
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] and redis.call('EXISTS', ARGV[3] .. owner) == 1 then
  return owner
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[5])
return ''
"#;

/// Releases a room this node owns: deletes claim and record.
///
/// KEYS: owner key, info key, rooms set. ARGV: this node's id, room name.
pub(crate) const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[2])
  return 1
end
return 0
"#;
