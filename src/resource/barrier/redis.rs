//! The Redis barrier: Lua functions to prepend to a business script, so the barrier keys are
//! checked and written by the same atomic script as the business change.
//!
//! A script built with [`script`] gets `KEYS[1..3]` = the Try, Confirm and Cancel barrier keys
//! of the branch (see [`keys`]), `ARGV[1]` = the op (`try|confirm|cancel`) and `ARGV[2]` = the
//! barrier keys' TTL in seconds; the business part's own keys and arguments follow. The body
//! calls `barrier_check()`, which answers `proceed`, `duplicate`, `empty_compensation`,
//! `late_try` or `not_tried`, and `barrier_mark(outcome)` once it has made (or skipped) its
//! change. The Try key's value records what happened: `try` (reserved), `cancel` (blocked by a
//! Cancel that came first), `undone` (reserved, then rolled back by the service).

/// The barrier's Lua prelude.
pub const PRELUDE: &str = r#"
local BARRIER_TRY, BARRIER_CONFIRM, BARRIER_CANCEL = KEYS[1], KEYS[2], KEYS[3]
local OP, BARRIER_TTL = ARGV[1], tonumber(ARGV[2])
local function barrier_check()
  local tried = redis.call('GET', BARRIER_TRY)
  if OP == 'try' then
    if tried == 'cancel' then return 'late_try' end
    if tried then return 'duplicate' end
  elseif OP == 'confirm' then
    if redis.call('EXISTS', BARRIER_CONFIRM) == 1 then return 'duplicate' end
    if tried ~= 'try' then return 'not_tried' end
  else
    if redis.call('EXISTS', BARRIER_CANCEL) == 1 then return 'duplicate' end
    if not tried then return 'empty_compensation' end
    if tried ~= 'try' then return 'not_tried' end
  end
  return 'proceed'
end
local function barrier_mark(outcome)
  if outcome == 'duplicate' or outcome == 'late_try' then return end
  if OP == 'try' then
    redis.call('SET', BARRIER_TRY, 'try', 'EX', BARRIER_TTL)
  elseif OP == 'confirm' then
    redis.call('SET', BARRIER_CONFIRM, '1', 'EX', BARRIER_TTL)
  else
    redis.call('SET', BARRIER_CANCEL, '1', 'EX', BARRIER_TTL)
    if outcome == 'empty_compensation' then
      redis.call('SET', BARRIER_TRY, 'cancel', 'EX', BARRIER_TTL)
    end
  end
end
"#;

/// Builds a script: the barrier prelude followed by the business body.
pub fn script(body: &str) -> ::redis::Script {
    ::redis::Script::new(&format!("{PRELUDE}\n{body}"))
}

/// The three barrier keys of a branch, in the order the prelude expects.
pub fn keys(namespace: &str, gid: &str, branch_id: &str) -> [String; 3] {
    ["try", "confirm", "cancel"].map(|op| format!("{namespace}:barrier:{gid}:{branch_id}:{op}"))
}
