//! The coordinator's writes as pure functions over rows held in memory.
//!
//! The writer ([`super::writer`]) takes every write that arrives while the previous batch is
//! being committed, loads (and locks) the rows they touch in one go, applies them here one after
//! the other, in arrival order, and then stores every row that changed in one local transaction.
//! Applying a batch in order is the same as running its writes one by one, so each write keeps
//! the rules it had on its own: status changes are compare-and-set on the current status, only
//! the lease holder finishes phase two, a branch joins only a `trying` transaction. No I/O here.

use std::collections::HashMap;

use super::model::{BranchStatus, CallOutcome, Op, TxStatus, auto_branch_id};
use super::store::{BranchRow, ResourceRow, TxRow, TxWithBranches};

// ---------------------------------------------------------------------------------------------
// The writes and their answers

pub struct NewBranch {
    pub gid: String,
    pub branch_id: Option<String>,
    pub resource: String,
    /// Canonical JSON text of the payload.
    pub payload: String,
    pub now: i64,
}

pub struct NewDtmBranch {
    pub gid: String,
    pub branch_id: String,
    /// The branch data exactly as the client sent it (the body of its Confirm and Cancel).
    pub data: String,
    pub confirm_url: String,
    pub cancel_url: String,
    pub now: i64,
}

/// A Try's outcome, to be recorded on its branch.
pub struct TryOutcome {
    pub gid: String,
    pub branch_id: String,
    pub outcome: CallOutcome,
    pub response: Option<String>,
    pub error: Option<String>,
    pub now: i64,
}

pub struct Decision {
    pub gid: String,
    pub to: TxStatus,
    pub reason: Option<String>,
    pub owner: String,
    pub lease_ms: i64,
    pub now: i64,
}

pub struct DriveResult {
    pub gid: String,
    pub owner: String,
    pub from: TxStatus,
    pub op: Op,
    /// Per called branch: Ok, or the error text.
    pub calls: Vec<(String, Result<(), String>)>,
    pub now: i64,
    /// When not everything is done: the retry time.
    pub retry_at: i64,
}

/// One write to the coordinator's tables.
pub enum Write {
    /// A new `trying` transaction (or the one with this gid).
    Begin(TxRow),
    /// A branch stored as `trying` before its Try is sent.
    AddBranch(NewBranch),
    /// A DTM branch stored before its client sends the Try.
    AddDtmBranch(NewDtmBranch),
    RecordTry(TryOutcome),
    /// `trying → committing | aborting`, taking the lease.
    Decide(Decision),
    /// The results of a phase-two pass and, when nothing is left open, the final status.
    Finish(DriveResult),
}

impl Write {
    pub fn gid(&self) -> &str {
        match self {
            Write::Begin(row) => &row.gid,
            Write::AddBranch(b) => &b.gid,
            Write::AddDtmBranch(b) => &b.gid,
            Write::RecordTry(t) => &t.gid,
            Write::Decide(d) => &d.gid,
            Write::Finish(r) => &r.gid,
        }
    }

    /// Must the commit wait for the WAL flush before anyone acts on this write? Only for what
    /// precedes an effect elsewhere: a branch before its Try, a decision before its first
    /// Confirm or Cancel. Everything else recovery can redo or rebuild: a lost begin had no
    /// effect yet; a lost Try outcome leaves the branch `trying`, which blocks commit and is
    /// cancelled on abort or timeout; a lost phase-two result is repeated (the calls are
    /// idempotent).
    pub fn durable(&self) -> bool {
        matches!(
            self,
            Write::AddBranch(_) | Write::AddDtmBranch(_) | Write::Decide(_)
        )
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Write::Begin(_) => "begin",
            Write::AddBranch(_) => "add_branch",
            Write::AddDtmBranch(_) => "add_dtm_branch",
            Write::RecordTry(_) => "record_try",
            Write::Decide(_) => "decide",
            Write::Finish(_) => "finish",
        }
    }
}

pub enum Begin {
    Created(TxRow),
    Existing(TxRow),
}

pub enum PrepareBranch {
    NotFound,
    /// The transaction is past the trying phase.
    NotTrying(TxStatus),
    /// Past `expires_at`: the caller must abort it.
    Expired,
    UnknownResource,
    /// This branch id was registered before with the same resource and payload.
    Existing(BranchRow),
    /// This branch id was registered before with another resource or payload.
    Mismatch,
    /// Stored durably as `trying`: the Try may now be sent.
    New(BranchRow, ResourceRow),
}

pub enum RegisterDtmBranch {
    Registered,
    /// The same branch was registered before with the same data and URLs.
    Duplicate,
    /// The same branch id was registered before with other data or URLs.
    Mismatch,
    NotFound,
    NotPrepared(TxStatus),
    /// Past `expires_at`: the caller must abort it.
    Expired,
}

/// A transaction, its branches and their resources by name.
pub type DriveInput = (TxRow, Vec<BranchRow>, HashMap<String, ResourceRow>);

pub enum Decide {
    NotFound,
    /// We moved the transaction and hold its lease: drive it (everything phase two needs was
    /// read under the same lock).
    Decided(DriveInput),
    /// Nothing changed; the transaction is in this status.
    Unchanged(TxStatus),
    /// Commit asked after `expires_at`: the transaction was moved to aborting instead, and we
    /// hold its lease.
    Expired(DriveInput),
    /// Commit asked while a branch's Try is still open or has failed.
    BranchOpen(String),
}

pub enum Finish {
    /// The transaction reached its final status (we made the change); its rows now.
    Final(TxStatus, TxWithBranches),
    /// Some branches still need the call: the new attempt count, and the rows now.
    Retry(i64, TxWithBranches),
    /// Another driver took over or finished it first; nothing was written.
    Lost,
}

/// The answer to one [`Write`], in the same shape.
pub enum Written {
    Begin(Begin),
    AddBranch(PrepareBranch),
    AddDtmBranch(RegisterDtmBranch),
    /// The transaction's status (None: there is no such transaction).
    RecordTry(Option<TxStatus>),
    Decide(Decide),
    Finish(Finish),
}

// ---------------------------------------------------------------------------------------------
// The unit of work

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowState {
    Loaded,
    Changed,
    New,
}

#[derive(Debug, Clone)]
struct Slot<T> {
    row: T,
    state: RowState,
}

impl<T> Slot<T> {
    fn loaded(row: T) -> Slot<T> {
        Slot {
            row,
            state: RowState::Loaded,
        }
    }

    /// The row, to be changed: it will be written back.
    fn change(&mut self) -> &mut T {
        if self.state == RowState::Loaded {
            self.state = RowState::Changed;
        }
        &mut self.row
    }
}

/// What a batch must write: rows to insert, and rows to update (whole, by primary key).
#[derive(Debug, Default)]
pub struct Changes<'a> {
    pub new_txs: Vec<&'a TxRow>,
    pub changed_txs: Vec<&'a TxRow>,
    pub new_branches: Vec<&'a BranchRow>,
    pub changed_branches: Vec<&'a BranchRow>,
}

impl Changes<'_> {
    pub fn is_empty(&self) -> bool {
        self.new_txs.is_empty()
            && self.changed_txs.is_empty()
            && self.new_branches.is_empty()
            && self.changed_branches.is_empty()
    }
}

/// The rows a batch touches: its transactions (locked while the batch runs), all their
/// branches, and the resources its writes name.
pub struct Unit {
    txs: HashMap<String, Slot<TxRow>>,
    /// Per gid, in the order the API lists them (created_at, branch_id).
    branches: HashMap<String, Vec<Slot<BranchRow>>>,
    resources: HashMap<String, ResourceRow>,
}

impl Unit {
    pub fn new(txs: Vec<TxRow>, branches: Vec<BranchRow>, resources: Vec<ResourceRow>) -> Unit {
        let mut by_gid: HashMap<String, Vec<Slot<BranchRow>>> = HashMap::new();
        for b in branches {
            by_gid
                .entry(b.gid.clone())
                .or_default()
                .push(Slot::loaded(b));
        }
        for list in by_gid.values_mut() {
            list.sort_by(|a, b| {
                (a.row.created_at, &a.row.branch_id).cmp(&(b.row.created_at, &b.row.branch_id))
            });
        }
        Unit {
            txs: txs
                .into_iter()
                .map(|t| (t.gid.clone(), Slot::loaded(t)))
                .collect(),
            branches: by_gid,
            resources: resources.into_iter().map(|r| (r.name.clone(), r)).collect(),
        }
    }

    /// The resources a batch of writes needs, once its branches are loaded: those new branches
    /// name, and those of the branches of every transaction being decided.
    pub fn resource_names<'a>(writes: &'a [Write], branches: &'a [BranchRow]) -> Vec<&'a str> {
        let deciding: Vec<&str> = writes
            .iter()
            .filter_map(|w| match w {
                Write::Decide(d) => Some(d.gid.as_str()),
                _ => None,
            })
            .collect();
        let mut names: Vec<&str> = writes
            .iter()
            .filter_map(|w| match w {
                Write::AddBranch(b) => Some(b.resource.as_str()),
                _ => None,
            })
            .chain(
                branches
                    .iter()
                    .filter(|b| deciding.contains(&b.gid.as_str()) && !b.resource.is_empty())
                    .map(|b| b.resource.as_str()),
            )
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    pub fn apply(&mut self, write: &Write) -> Written {
        match write {
            Write::Begin(row) => Written::Begin(self.begin(row)),
            Write::AddBranch(b) => Written::AddBranch(self.add_branch(b)),
            Write::AddDtmBranch(b) => Written::AddDtmBranch(self.add_dtm_branch(b)),
            Write::RecordTry(t) => Written::RecordTry(self.record_try(t)),
            Write::Decide(d) => Written::Decide(self.decide(d)),
            Write::Finish(r) => Written::Finish(self.finish(r)),
        }
    }

    /// Every row that must be written.
    pub fn changes(&self) -> Changes<'_> {
        let mut changes = Changes::default();
        for slot in self.txs.values() {
            match slot.state {
                RowState::New => changes.new_txs.push(&slot.row),
                RowState::Changed => changes.changed_txs.push(&slot.row),
                RowState::Loaded => {}
            }
        }
        for slot in self.branches.values().flatten() {
            match slot.state {
                RowState::New => changes.new_branches.push(&slot.row),
                RowState::Changed => changes.changed_branches.push(&slot.row),
                RowState::Loaded => {}
            }
        }
        // A stable order keeps row locks taken in one order by every writer.
        changes.new_txs.sort_by(|a, b| a.gid.cmp(&b.gid));
        changes.changed_txs.sort_by(|a, b| a.gid.cmp(&b.gid));
        let order =
            |a: &&BranchRow, b: &&BranchRow| (&a.gid, &a.branch_id).cmp(&(&b.gid, &b.branch_id));
        changes.new_branches.sort_by(order);
        changes.changed_branches.sort_by(order);
        changes
    }

    fn branch_rows(&self, gid: &str) -> Vec<BranchRow> {
        self.branches
            .get(gid)
            .map(|list| list.iter().map(|s| s.row.clone()).collect())
            .unwrap_or_default()
    }

    fn find_branch(&self, gid: &str, branch_id: &str) -> Option<&BranchRow> {
        self.branches
            .get(gid)?
            .iter()
            .map(|s| &s.row)
            .find(|b| b.branch_id == branch_id)
    }

    fn insert_branch(&mut self, row: BranchRow) {
        self.branches
            .entry(row.gid.clone())
            .or_default()
            .push(Slot {
                row,
                state: RowState::New,
            });
    }

    fn begin(&mut self, row: &TxRow) -> Begin {
        if let Some(existing) = self.txs.get(&row.gid) {
            return Begin::Existing(existing.row.clone());
        }
        self.txs.insert(
            row.gid.clone(),
            Slot {
                row: row.clone(),
                state: RowState::New,
            },
        );
        Begin::Created(row.clone())
    }

    /// Stores a branch as `trying` before its Try is sent (durable before effect). The
    /// transaction is locked, so no decision slips in between the status check and the insert.
    fn add_branch(&mut self, new: &NewBranch) -> PrepareBranch {
        let Some(tx) = self.txs.get(&new.gid) else {
            return PrepareBranch::NotFound;
        };
        let (status, expires_at) = (tx.row.status(), tx.row.expires_at);
        if status != TxStatus::Trying {
            return PrepareBranch::NotTrying(status);
        }
        if let Some(id) = &new.branch_id
            && let Some(b) = self.find_branch(&new.gid, id)
        {
            return if b.resource == new.resource && b.payload == new.payload {
                PrepareBranch::Existing(b.clone())
            } else {
                PrepareBranch::Mismatch
            };
        }
        if expires_at <= new.now {
            return PrepareBranch::Expired;
        }
        let Some(resource) = self.resources.get(&new.resource).cloned() else {
            return PrepareBranch::UnknownResource;
        };
        let branch_id = match &new.branch_id {
            Some(id) => id.clone(),
            // The smallest free number: one a client already took as an explicit id is skipped.
            None => (1..)
                .map(auto_branch_id)
                .find(|id| self.find_branch(&new.gid, id).is_none())
                .unwrap_or_default(),
        };
        let row = BranchRow {
            resource: new.resource.clone(),
            ..BranchRow::new(
                &new.gid,
                &branch_id,
                BranchStatus::Trying,
                &new.payload,
                new.now,
            )
        };
        self.insert_branch(row.clone());
        PrepareBranch::New(row, resource)
    }

    /// Stores a DTM branch before its client sends the Try. The coordinator never sees that
    /// Try, so the branch is `tried`: confirmed on submit, cancelled on abort (the resource's
    /// barrier makes a Cancel of a Try that never ran a no-op).
    fn add_dtm_branch(&mut self, new: &NewDtmBranch) -> RegisterDtmBranch {
        let Some(tx) = self.txs.get(&new.gid) else {
            return RegisterDtmBranch::NotFound;
        };
        let (status, expires_at) = (tx.row.status(), tx.row.expires_at);
        if let Some(b) = self.find_branch(&new.gid, &new.branch_id) {
            let same = b.payload == new.data
                && b.confirm_url.as_deref() == Some(new.confirm_url.as_str())
                && b.cancel_url.as_deref() == Some(new.cancel_url.as_str());
            return if same {
                RegisterDtmBranch::Duplicate
            } else {
                RegisterDtmBranch::Mismatch
            };
        }
        if status != TxStatus::Trying {
            return RegisterDtmBranch::NotPrepared(status);
        }
        if expires_at <= new.now {
            return RegisterDtmBranch::Expired;
        }
        let row = BranchRow {
            confirm_url: Some(new.confirm_url.clone()),
            cancel_url: Some(new.cancel_url.clone()),
            ..BranchRow::new(
                &new.gid,
                &new.branch_id,
                BranchStatus::Tried,
                &new.data,
                new.now,
            )
        };
        self.insert_branch(row);
        RegisterDtmBranch::Registered
    }

    /// Records a Try's outcome, unless a decision was made meanwhile: from then on phase two
    /// owns the branch (and cancels it whatever its Try did).
    fn record_try(&mut self, t: &TryOutcome) -> Option<TxStatus> {
        let status = self.txs.get(&t.gid)?.row.status();
        if status != TxStatus::Trying {
            return Some(status);
        }
        let slot = self
            .branches
            .get_mut(&t.gid)?
            .iter_mut()
            .find(|s| s.row.branch_id == t.branch_id)?;
        if slot.row.status() == BranchStatus::Trying {
            let b = slot.change();
            b.status = match t.outcome {
                CallOutcome::Done => BranchStatus::Tried,
                _ => BranchStatus::Failed,
            }
            .as_str()
            .into();
            b.try_outcome = Some(t.outcome.as_str().into());
            b.response = t.response.clone();
            b.last_error = t.error.clone();
            b.attempts += 1;
            b.updated_at = t.now;
        }
        Some(status)
    }

    /// The decision: `trying → committing` or `trying → aborting`, with the lease taken in the
    /// same write. A commit after `expires_at` becomes an abort; a commit while a branch's Try
    /// is open or failed is refused.
    fn decide(&mut self, d: &Decision) -> Decide {
        let Some(tx) = self.txs.get(&d.gid) else {
            return Decide::NotFound;
        };
        let current = tx.row.status();
        // Only `trying` moves to a decision; nothing crosses from one path to the other.
        if !current.can_move_to(d.to) {
            return Decide::Unchanged(current);
        }
        let mut to = d.to;
        let mut reason = d.reason.clone();
        let mut expired = false;
        if to == TxStatus::Committing {
            if tx.row.expires_at <= d.now {
                to = TxStatus::Aborting;
                reason = Some("timed out before commit".into());
                expired = true;
            } else if let Some(b) = self.branches.get(&d.gid).and_then(|list| {
                list.iter()
                    .map(|s| &s.row)
                    .find(|b| matches!(b.status(), BranchStatus::Trying | BranchStatus::Failed))
            }) {
                return Decide::BranchOpen(format!("branch {} is {}", b.branch_id, b.status));
            }
        }
        let Some(slot) = self.txs.get_mut(&d.gid) else {
            return Decide::NotFound;
        };
        let row = slot.change();
        row.status = to.as_str().into();
        row.reason = reason;
        row.updated_at = d.now;
        row.lease_owner = Some(d.owner.clone());
        row.due_at = d.now + d.lease_ms;
        let row = row.clone();
        let branches = self.branch_rows(&d.gid);
        let resources = branches
            .iter()
            .filter_map(|b| self.resources.get(&b.resource))
            .map(|r| (r.name.clone(), r.clone()))
            .collect();
        let input = (row, branches, resources);
        if expired {
            Decide::Expired(input)
        } else {
            Decide::Decided(input)
        }
    }

    /// Records a phase-two pass: each called branch's result and then, only if no branch is
    /// left open, the final status — decided once, by the lease holder of the still-decided
    /// transaction, never by concurrent per-branch completions.
    fn finish(&mut self, r: &DriveResult) -> Finish {
        let Some(tx) = self.txs.get(&r.gid) else {
            return Finish::Lost;
        };
        let mine = tx.row.status() == r.from && tx.row.lease_owner.as_deref() == Some(&r.owner);
        if !mine {
            return Finish::Lost;
        }
        let done_status = BranchStatus::after(r.op);
        if let Some(list) = self.branches.get_mut(&r.gid) {
            for slot in list.iter_mut() {
                let Some((_, result)) = r.calls.iter().find(|(id, _)| *id == slot.row.branch_id)
                else {
                    continue;
                };
                let b = slot.change();
                b.attempts += 1;
                b.updated_at = r.now;
                match result {
                    Ok(()) => {
                        b.status = done_status.as_str().into();
                        b.last_error = None;
                    }
                    Err(e) => b.last_error = Some(e.clone()),
                }
            }
        }
        let branches = self.branch_rows(&r.gid);
        let open = branches.iter().filter(|b| b.status().needs(r.op)).count();
        let Some(slot) = self.txs.get_mut(&r.gid) else {
            return Finish::Lost;
        };
        let tx = slot.change();
        tx.updated_at = r.now;
        tx.lease_owner = None;
        if open == 0 {
            let to = r.from.final_status().unwrap_or(r.from);
            tx.status = to.as_str().into();
            tx.finished_at = Some(r.now);
            tx.next_retry_at = None;
            return Finish::Final(to, (tx.clone(), branches));
        }
        tx.attempts += 1;
        tx.next_retry_at = Some(r.retry_at);
        tx.due_at = r.retry_at;
        tx.last_error = r
            .calls
            .iter()
            .find_map(|(id, res)| res.as_ref().err().map(|e| format!("branch {id}: {e}")));
        Finish::Retry(tx.attempts, (tx.clone(), branches))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    pub(crate) fn tx(gid: &str, status: TxStatus) -> TxRow {
        TxRow {
            gid: gid.into(),
            status: status.as_str().into(),
            created_at: NOW,
            updated_at: NOW,
            expires_at: NOW + 30_000,
            finished_at: None,
            reason: None,
            metadata: "{}".into(),
            attempts: 0,
            next_retry_at: None,
            last_error: None,
            due_at: NOW + 30_000,
            lease_owner: None,
            protocol: "native".into(),
            options: None,
        }
    }

    fn resource(name: &str) -> ResourceRow {
        ResourceRow {
            name: name.into(),
            try_url: format!("http://{name}/try"),
            confirm_url: format!("http://{name}/confirm"),
            cancel_url: format!("http://{name}/cancel"),
            created_at: NOW,
            updated_at: NOW,
        }
    }

    fn add(gid: &str, id: Option<&str>, resource: &str, now: i64) -> Write {
        Write::AddBranch(NewBranch {
            gid: gid.into(),
            branch_id: id.map(str::to_string),
            resource: resource.into(),
            payload: "{\"n\":1}".into(),
            now,
        })
    }

    fn record(gid: &str, id: &str, outcome: CallOutcome) -> Write {
        Write::RecordTry(TryOutcome {
            gid: gid.into(),
            branch_id: id.into(),
            outcome,
            response: None,
            error: None,
            now: NOW + 2,
        })
    }

    fn decide(gid: &str, to: TxStatus, owner: &str, now: i64) -> Write {
        Write::Decide(Decision {
            gid: gid.into(),
            to,
            reason: None,
            owner: owner.into(),
            lease_ms: 15_000,
            now,
        })
    }

    fn finish(gid: &str, owner: &str, calls: Vec<(&str, Result<(), String>)>) -> Write {
        Write::Finish(DriveResult {
            gid: gid.into(),
            owner: owner.into(),
            from: TxStatus::Committing,
            op: Op::Confirm,
            calls: calls
                .into_iter()
                .map(|(id, r)| (id.to_string(), r))
                .collect(),
            now: NOW + 5,
            retry_at: NOW + 105,
        })
    }

    fn new_branch_id(w: Written) -> String {
        match w {
            Written::AddBranch(PrepareBranch::New(b, r)) => {
                assert_eq!(r.name, b.resource);
                b.branch_id
            }
            _ => panic!("expected a new branch"),
        }
    }

    /// One whole checkout applied in one unit: what a batch holding every step would store.
    #[test]
    fn a_checkout_in_one_batch_commits_once() {
        let mut unit = Unit::new(vec![], vec![], vec![resource("inv"), resource("wal")]);
        assert!(matches!(
            unit.apply(&Write::Begin(tx("g", TxStatus::Trying))),
            Written::Begin(Begin::Created(_))
        ));
        assert_eq!(
            new_branch_id(unit.apply(&add("g", None, "inv", NOW + 1))),
            "01"
        );
        assert_eq!(
            new_branch_id(unit.apply(&add("g", None, "wal", NOW + 1))),
            "02"
        );
        for id in ["01", "02"] {
            assert!(matches!(
                unit.apply(&record("g", id, CallOutcome::Done)),
                Written::RecordTry(Some(TxStatus::Trying))
            ));
        }
        let Written::Decide(Decide::Decided((row, branches, resources))) =
            unit.apply(&decide("g", TxStatus::Committing, "me", NOW + 3))
        else {
            panic!("expected a decision");
        };
        assert_eq!(row.status, "committing");
        assert_eq!(row.lease_owner.as_deref(), Some("me"));
        assert_eq!(branches.len(), 2);
        assert_eq!(resources.len(), 2);
        let Written::Finish(Finish::Final(to, (tx, branches))) =
            unit.apply(&finish("g", "me", vec![("01", Ok(())), ("02", Ok(()))]))
        else {
            panic!("expected the final status");
        };
        assert_eq!(to, TxStatus::Committed);
        assert_eq!(tx.finished_at, Some(NOW + 5));
        assert_eq!(tx.lease_owner, None);
        assert!(branches.iter().all(|b| b.status == "confirmed"));
        // Everything is new: two inserts, no updates.
        let c = unit.changes();
        assert_eq!((c.new_txs.len(), c.new_branches.len()), (1, 2));
        assert!(c.changed_txs.is_empty() && c.changed_branches.is_empty());
        assert_eq!(c.new_txs[0].status, "committed");
    }

    #[test]
    fn begin_twice_finds_the_first() {
        let mut unit = Unit::new(vec![tx("g", TxStatus::Committed)], vec![], vec![]);
        assert!(matches!(
            unit.apply(&Write::Begin(tx("g", TxStatus::Trying))),
            Written::Begin(Begin::Existing(t)) if t.status == "committed"
        ));
        assert!(unit.changes().is_empty());
    }

    #[test]
    fn branches_join_only_a_live_trying_transaction() {
        let mut unit = Unit::new(
            vec![
                tx("aborted", TxStatus::Aborting),
                tx("live", TxStatus::Trying),
            ],
            vec![],
            vec![resource("inv")],
        );
        assert!(matches!(
            unit.apply(&add("missing", None, "inv", NOW)),
            Written::AddBranch(PrepareBranch::NotFound)
        ));
        assert!(matches!(
            unit.apply(&add("aborted", None, "inv", NOW)),
            Written::AddBranch(PrepareBranch::NotTrying(TxStatus::Aborting))
        ));
        assert!(matches!(
            unit.apply(&add("live", None, "nope", NOW)),
            Written::AddBranch(PrepareBranch::UnknownResource)
        ));
        assert!(matches!(
            unit.apply(&add("live", None, "inv", NOW + 30_000)),
            Written::AddBranch(PrepareBranch::Expired)
        ));
        assert!(unit.changes().is_empty(), "a refusal writes nothing");
    }

    #[test]
    fn explicit_branch_ids_are_idempotent_and_skipped_by_numbering() {
        let mut unit = Unit::new(
            vec![tx("g", TxStatus::Trying)],
            vec![],
            vec![resource("inv")],
        );
        assert_eq!(
            new_branch_id(unit.apply(&add("g", Some("02"), "inv", NOW))),
            "02"
        );
        assert!(matches!(
            unit.apply(&add("g", Some("02"), "inv", NOW)),
            Written::AddBranch(PrepareBranch::Existing(_))
        ));
        assert!(matches!(
            unit.apply(&add("g", Some("02"), "other", NOW)),
            Written::AddBranch(PrepareBranch::Mismatch)
        ));
        assert_eq!(new_branch_id(unit.apply(&add("g", None, "inv", NOW))), "01");
        assert_eq!(new_branch_id(unit.apply(&add("g", None, "inv", NOW))), "03");
        let c = unit.changes();
        assert!(
            c.changed_txs.is_empty(),
            "a new branch leaves its transaction's row alone"
        );
        assert_eq!(c.new_branches.len(), 3);
    }

    #[test]
    fn commit_is_refused_while_a_try_is_open_and_becomes_abort_after_expiry() {
        let mut unit = Unit::new(
            vec![tx("g", TxStatus::Trying), tx("late", TxStatus::Trying)],
            vec![],
            vec![resource("inv")],
        );
        new_branch_id(unit.apply(&add("g", None, "inv", NOW)));
        assert!(matches!(
            unit.apply(&decide("g", TxStatus::Committing, "me", NOW)),
            Written::Decide(Decide::BranchOpen(_))
        ));
        assert!(matches!(
            unit.apply(&decide("late", TxStatus::Committing, "me", NOW + 30_000)),
            Written::Decide(Decide::Expired((row, _, _))) if row.status == "aborting"
        ));
        // Nothing crosses from one path to the other.
        assert!(matches!(
            unit.apply(&decide("late", TxStatus::Committing, "me", NOW)),
            Written::Decide(Decide::Unchanged(TxStatus::Aborting))
        ));
    }

    #[test]
    fn a_try_outcome_after_the_decision_is_not_recorded() {
        let mut unit = Unit::new(
            vec![tx("g", TxStatus::Trying)],
            vec![],
            vec![resource("inv")],
        );
        new_branch_id(unit.apply(&add("g", None, "inv", NOW)));
        assert!(matches!(
            unit.apply(&decide("g", TxStatus::Aborting, "me", NOW)),
            Written::Decide(Decide::Decided(_))
        ));
        assert!(matches!(
            unit.apply(&record("g", "01", CallOutcome::Done)),
            Written::RecordTry(Some(TxStatus::Aborting))
        ));
        assert_eq!(unit.changes().new_branches[0].status, "trying");
        assert!(matches!(
            unit.apply(&record("other", "01", CallOutcome::Done)),
            Written::RecordTry(None)
        ));
    }

    #[test]
    fn only_the_lease_holder_finishes_and_a_failed_call_is_retried() {
        let mut committing = tx("g", TxStatus::Committing);
        committing.lease_owner = Some("me".into());
        let branch = |id: &str| BranchRow {
            resource: "inv".into(),
            ..BranchRow::new("g", id, BranchStatus::Tried, "{}", NOW)
        };
        let mut unit = Unit::new(
            vec![committing],
            vec![branch("01"), branch("02")],
            vec![resource("inv")],
        );
        assert!(matches!(
            unit.apply(&finish("g", "someone else", vec![("01", Ok(()))])),
            Written::Finish(Finish::Lost)
        ));
        assert!(unit.changes().is_empty());
        let Written::Finish(Finish::Retry(attempts, (tx, branches))) = unit.apply(&finish(
            "g",
            "me",
            vec![("01", Ok(())), ("02", Err("503".into()))],
        )) else {
            panic!("expected a retry");
        };
        assert_eq!(attempts, 1);
        assert_eq!(tx.status, "committing");
        assert_eq!(
            tx.lease_owner, None,
            "the lease is given back for the retry"
        );
        assert_eq!(tx.due_at, NOW + 105);
        assert_eq!(tx.last_error.as_deref(), Some("branch 02: 503"));
        assert_eq!(branches[0].status, "confirmed");
        assert_eq!(branches[1].status, "tried");
        // The lease was given back: the same owner must take it again before finishing.
        assert!(matches!(
            unit.apply(&finish("g", "me", vec![("02", Ok(()))])),
            Written::Finish(Finish::Lost)
        ));
        let c = unit.changes();
        assert_eq!((c.changed_txs.len(), c.changed_branches.len()), (1, 2));
    }

    #[test]
    fn resource_names_cover_new_branches_and_decided_ones() {
        let loaded = vec![
            BranchRow {
                resource: "wal".into(),
                ..BranchRow::new("d", "01", BranchStatus::Tried, "{}", NOW)
            },
            BranchRow {
                resource: "other".into(),
                ..BranchRow::new("x", "01", BranchStatus::Tried, "{}", NOW)
            },
        ];
        let writes = vec![
            add("a", None, "inv", NOW),
            decide("d", TxStatus::Committing, "me", NOW),
            add("b", None, "inv", NOW),
        ];
        assert_eq!(Unit::resource_names(&writes, &loaded), vec!["inv", "wal"]);
    }
}
