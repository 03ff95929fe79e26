//! Fault injection for the demo and tests (`--faults`): the next N calls of an operation fail,
//! refuse, or are delayed.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Deserialize;

use crate::http::ApiError;
use crate::resource::Op;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Answer 503 without doing anything.
    Error,
    /// Answer 409 without reserving (Try only).
    Refuse,
    /// Wait, then do the work.
    Delay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultOp {
    Try,
    Confirm,
    Cancel,
}

impl FaultOp {
    fn op(self) -> Op {
        match self {
            FaultOp::Try => Op::Try,
            FaultOp::Confirm => Op::Confirm,
            FaultOp::Cancel => Op::Cancel,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub op: FaultOp,
    pub action: Action,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub delay_ms: u64,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy)]
pub struct Fault {
    pub action: Action,
    pub delay_ms: u64,
}

#[derive(Default)]
pub struct Faults {
    armed: Mutex<HashMap<Op, (Fault, u32)>>,
}

impl Faults {
    pub fn arm(&self, spec: FaultSpec) -> Result<(), ApiError> {
        if spec.action == Action::Refuse && spec.op != FaultOp::Try {
            return Err(ApiError::invalid(
                "Field `action`: refuse applies to try only.",
            ));
        }
        if spec.count == 0 || spec.count > 1_000_000 {
            return Err(ApiError::invalid(
                "Field `count` must be between 1 and 1000000.",
            ));
        }
        if spec.delay_ms > 600_000 {
            return Err(ApiError::invalid(
                "Field `delay_ms` must be at most 600000.",
            ));
        }
        let fault = Fault {
            action: spec.action,
            delay_ms: spec.delay_ms,
        };
        self.armed
            .lock()
            .expect("faults lock")
            .insert(spec.op.op(), (fault, spec.count));
        Ok(())
    }

    pub fn clear(&self) {
        self.armed.lock().expect("faults lock").clear();
    }

    /// Takes one shot of the fault armed for `op`, if any.
    pub fn take(&self, op: Op) -> Option<Fault> {
        let mut armed = self.armed.lock().expect("faults lock");
        let (fault, left) = armed.get_mut(&op)?;
        let fault = *fault;
        *left -= 1;
        if *left == 0 {
            armed.remove(&op);
        }
        Some(fault)
    }
}
