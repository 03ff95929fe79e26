//! The pure part of the coordinator: statuses and their transitions, how a resource's answer is
//! classified, which branches phase two must call, and retry backoff. No I/O here.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxStatus {
    Trying,
    Committing,
    Committed,
    Aborting,
    Aborted,
}

impl TxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TxStatus::Trying => "trying",
            TxStatus::Committing => "committing",
            TxStatus::Committed => "committed",
            TxStatus::Aborting => "aborting",
            TxStatus::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Option<TxStatus> {
        Some(match s {
            "trying" => TxStatus::Trying,
            "committing" => TxStatus::Committing,
            "committed" => TxStatus::Committed,
            "aborting" => TxStatus::Aborting,
            "aborted" => TxStatus::Aborted,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        matches!(self, TxStatus::Committed | TxStatus::Aborted)
    }

    /// The statuses whose work is not done: recovery looks only at these.
    pub const OPEN: [&'static str; 3] = ["trying", "committing", "aborting"];

    /// The only transitions there are. Nothing moves between the commit and abort paths.
    pub fn can_move_to(self, to: TxStatus) -> bool {
        matches!(
            (self, to),
            (TxStatus::Trying, TxStatus::Committing)
                | (TxStatus::Trying, TxStatus::Aborting)
                | (TxStatus::Committing, TxStatus::Committed)
                | (TxStatus::Aborting, TxStatus::Aborted)
        )
    }

    /// Phase two's operation for a decided transaction.
    pub fn phase_two(self) -> Option<Op> {
        match self {
            TxStatus::Committing => Some(Op::Confirm),
            TxStatus::Aborting => Some(Op::Cancel),
            _ => None,
        }
    }

    /// Where a decided transaction ends once every branch is done.
    pub fn final_status(self) -> Option<TxStatus> {
        match self {
            TxStatus::Committing => Some(TxStatus::Committed),
            TxStatus::Aborting => Some(TxStatus::Aborted),
            _ => None,
        }
    }
}

impl fmt::Display for TxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BranchStatus {
    /// Try sent or about to be; outcome not recorded.
    Trying,
    Tried,
    /// Try refused, or its outcome unknown.
    Failed,
    Confirmed,
    Cancelled,
}

impl BranchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BranchStatus::Trying => "trying",
            BranchStatus::Tried => "tried",
            BranchStatus::Failed => "failed",
            BranchStatus::Confirmed => "confirmed",
            BranchStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<BranchStatus> {
        Some(match s {
            "trying" => BranchStatus::Trying,
            "tried" => BranchStatus::Tried,
            "failed" => BranchStatus::Failed,
            "confirmed" => BranchStatus::Confirmed,
            "cancelled" => BranchStatus::Cancelled,
            _ => return None,
        })
    }

    /// Does phase two `op` still have to call this branch?
    pub fn needs(self, op: Op) -> bool {
        match op {
            // Only a successful Try is confirmed; commit is refused while a Try is open.
            Op::Confirm => self == BranchStatus::Tried,
            // Every branch whose Try may have reserved something is cancelled, including one
            // whose outcome is unknown or still in flight (the resource's barrier makes a
            // Cancel before its Try a no-op and the late Try harmless).
            Op::Cancel => matches!(
                self,
                BranchStatus::Trying | BranchStatus::Tried | BranchStatus::Failed
            ),
            Op::Try => false,
        }
    }

    /// The branch status after a successful phase-two call.
    pub fn after(op: Op) -> BranchStatus {
        match op {
            Op::Try => BranchStatus::Tried,
            Op::Confirm => BranchStatus::Confirmed,
            Op::Cancel => BranchStatus::Cancelled,
        }
    }
}

impl fmt::Display for BranchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Try,
    Confirm,
    Cancel,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Try => "try",
            Op::Confirm => "confirm",
            Op::Cancel => "cancel",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a resource's answer means (API.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Done,
    /// Only for Try: the resource said no, finally.
    Refused,
    /// No answer, or an answer that settles nothing: Try is treated as failed, Confirm and
    /// Cancel are retried.
    Unknown,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Done => "done",
            CallOutcome::Refused => "refused",
            CallOutcome::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<CallOutcome> {
        Some(match s {
            "done" => CallOutcome::Done,
            "refused" => CallOutcome::Refused,
            "unknown" => CallOutcome::Unknown,
            _ => return None,
        })
    }
}

/// Classifies an HTTP status (None: no answer at all).
pub fn classify(op: Op, status: Option<u16>) -> CallOutcome {
    match status {
        Some(s) if (200..300).contains(&s) => CallOutcome::Done,
        Some(409 | 422) if op == Op::Try => CallOutcome::Refused,
        _ => CallOutcome::Unknown,
    }
}

/// Capped exponential backoff with full jitter: a uniform delay in `[0, min(cap, base·2^n)]`
/// before retry number `attempt` (1-based). `unit` is a random number in `[0, 1)`.
pub fn backoff_ms(attempt: u32, base_ms: u64, cap_ms: u64, unit: f64) -> u64 {
    let exp = base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(32));
    let ceiling = exp.min(cap_ms);
    // Never zero, so a failing resource is not hammered in a tight loop.
    ((ceiling as f64 * unit.clamp(0.0, 1.0)) as u64)
        .max(base_ms.min(ceiling).min(10))
        .max(1)
}

/// The branch id the coordinator assigns when the client gives none: `01`, `02`, …
pub fn auto_branch_id(seq: i64) -> String {
    format!("{seq:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_never_cross_paths() {
        use TxStatus::*;
        assert!(Trying.can_move_to(Committing));
        assert!(Trying.can_move_to(Aborting));
        assert!(Committing.can_move_to(Committed));
        assert!(Aborting.can_move_to(Aborted));
        assert!(!Committing.can_move_to(Aborting));
        assert!(!Aborting.can_move_to(Committing));
        assert!(!Committed.can_move_to(Aborted));
        assert!(!Trying.can_move_to(Committed));
        for s in [Trying, Committing, Committed, Aborting, Aborted] {
            assert_eq!(TxStatus::parse(s.as_str()), Some(s));
            assert!(!s.can_move_to(s));
        }
        assert_eq!(TxStatus::parse("bogus"), None);
    }

    #[test]
    fn phase_two_plan() {
        use BranchStatus::*;
        assert_eq!(TxStatus::Committing.phase_two(), Some(Op::Confirm));
        assert_eq!(TxStatus::Aborting.phase_two(), Some(Op::Cancel));
        assert_eq!(TxStatus::Trying.phase_two(), None);
        assert!(Tried.needs(Op::Confirm));
        assert!(!Confirmed.needs(Op::Confirm));
        assert!(!Failed.needs(Op::Confirm));
        for s in [Trying, Tried, Failed] {
            assert!(s.needs(Op::Cancel));
        }
        assert!(!Cancelled.needs(Op::Cancel));
    }

    #[test]
    fn classification_follows_the_contract() {
        assert_eq!(classify(Op::Try, Some(200)), CallOutcome::Done);
        assert_eq!(classify(Op::Try, Some(204)), CallOutcome::Done);
        assert_eq!(classify(Op::Try, Some(409)), CallOutcome::Refused);
        assert_eq!(classify(Op::Try, Some(422)), CallOutcome::Refused);
        assert_eq!(classify(Op::Try, Some(500)), CallOutcome::Unknown);
        assert_eq!(classify(Op::Try, Some(404)), CallOutcome::Unknown);
        assert_eq!(classify(Op::Try, None), CallOutcome::Unknown);
        // Confirm and Cancel are never "refused": they are retried until they succeed.
        assert_eq!(classify(Op::Confirm, Some(409)), CallOutcome::Unknown);
        assert_eq!(classify(Op::Cancel, Some(422)), CallOutcome::Unknown);
        assert_eq!(classify(Op::Cancel, Some(200)), CallOutcome::Done);
    }

    #[test]
    fn backoff_is_capped_jittered_and_positive() {
        assert_eq!(backoff_ms(1, 100, 30_000, 0.999_999), 99);
        assert_eq!(backoff_ms(3, 100, 30_000, 0.5), 200);
        assert_eq!(backoff_ms(30, 100, 30_000, 0.999_999), 29_999);
        assert_eq!(backoff_ms(64, 100, 30_000, 1.0), 30_000);
        assert!(backoff_ms(1, 100, 30_000, 0.0) >= 1);
        for attempt in 1..40 {
            for unit in [0.0, 0.3, 0.99] {
                let d = backoff_ms(attempt, 100, 30_000, unit);
                assert!((1..=30_000).contains(&d), "attempt {attempt}: {d}");
            }
        }
    }

    #[test]
    fn auto_ids() {
        assert_eq!(auto_branch_id(1), "01");
        assert_eq!(auto_branch_id(12), "12");
        assert_eq!(auto_branch_id(123), "123");
    }
}
