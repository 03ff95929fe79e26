//! The coordinator's persistence (diesel). Every function here is blocking and takes its
//! connection from the pool itself; callers run it through `Pool::run`. Each function is one
//! local transaction with no I/O inside. Status changes are compare-and-set on the old status.

use std::collections::HashMap;

use diesel::prelude::*;

use super::model::{BranchStatus, CallOutcome, Op, TxStatus};
use crate::db::schema::{branches, resources, transactions};
use crate::db::{DbConn, Pool, StoreError};
use crate::with_conn;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = resources)]
pub struct ResourceRow {
    pub name: String,
    pub try_url: String,
    pub confirm_url: String,
    pub cancel_url: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ResourceRow {
    pub fn url(&self, op: Op) -> &str {
        match op {
            Op::Try => &self.try_url,
            Op::Confirm => &self.confirm_url,
            Op::Cancel => &self.cancel_url,
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = transactions)]
pub struct TxRow {
    pub gid: String,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: i64,
    pub finished_at: Option<i64>,
    pub reason: Option<String>,
    pub metadata: String,
    pub attempts: i64,
    pub next_retry_at: Option<i64>,
    pub last_error: Option<String>,
    pub due_at: i64,
    pub lease_owner: Option<String>,
    pub branch_seq: i64,
    /// `native`, or `dtm` for a transaction made through /api/dtmsvr.
    pub protocol: String,
    /// DTM's per-transaction options (JSON), for `dtm` transactions.
    pub options: Option<String>,
}

impl TxRow {
    pub fn status(&self) -> TxStatus {
        TxStatus::parse(&self.status).unwrap_or(TxStatus::Trying)
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = branches)]
pub struct BranchRow {
    pub gid: String,
    pub branch_id: String,
    pub resource: String,
    pub status: String,
    pub payload: String,
    pub try_outcome: Option<String>,
    pub response: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// A DTM branch's own URLs (phase two calls them DTM-style); None for a native branch.
    pub confirm_url: Option<String>,
    pub cancel_url: Option<String>,
}

impl BranchRow {
    /// A branch just registered: no call made yet on its behalf.
    fn new(gid: &str, branch_id: &str, status: BranchStatus, payload: &str, now: i64) -> BranchRow {
        BranchRow {
            gid: gid.to_string(),
            branch_id: branch_id.to_string(),
            resource: String::new(),
            status: status.as_str().into(),
            payload: payload.to_string(),
            try_outcome: None,
            response: None,
            attempts: 0,
            last_error: None,
            created_at: now,
            updated_at: now,
            confirm_url: None,
            cancel_url: None,
        }
    }

    /// A DTM branch's URL for `op` (None for a native branch, which uses its resource's).
    pub fn dtm_url(&self, op: Op) -> Option<&str> {
        match op {
            Op::Confirm => self.confirm_url.as_deref(),
            Op::Cancel => self.cancel_url.as_deref(),
            Op::Try => None,
        }
    }

    pub fn status(&self) -> BranchStatus {
        BranchStatus::parse(&self.status).unwrap_or(BranchStatus::Trying)
    }
}

/// A transaction with its branches.
pub type TxWithBranches = (TxRow, Vec<BranchRow>);

/// Row-locking reads that differ per backend.
trait CoordConn: DbConn {
    /// Reads a transaction and holds its row until the local transaction ends (on SQLite the
    /// immediate transaction already holds the database's write lock).
    fn lock_tx(&mut self, gid: &str) -> QueryResult<Option<TxRow>>;
    /// Open transactions whose due time has passed, skipping rows another coordinator is
    /// claiming right now (Postgres `FOR UPDATE SKIP LOCKED`).
    fn due(&mut self, now: i64, limit: i64) -> QueryResult<Vec<(String, String)>>;
}

impl CoordConn for SqliteConnection {
    fn lock_tx(&mut self, gid: &str) -> QueryResult<Option<TxRow>> {
        self.tx_of(gid)
    }

    fn due(&mut self, now: i64, limit: i64) -> QueryResult<Vec<(String, String)>> {
        transactions::table
            .select((transactions::gid, transactions::status))
            .filter(transactions::status.eq_any(TxStatus::OPEN))
            .filter(transactions::due_at.le(now))
            .order(transactions::due_at.asc())
            .limit(limit)
            .load(self)
    }
}

impl CoordConn for PgConnection {
    fn lock_tx(&mut self, gid: &str) -> QueryResult<Option<TxRow>> {
        transactions::table
            .find(gid)
            .select(TxRow::as_select())
            .for_update()
            .first(self)
            .optional()
    }

    fn due(&mut self, now: i64, limit: i64) -> QueryResult<Vec<(String, String)>> {
        transactions::table
            .select((transactions::gid, transactions::status))
            .filter(transactions::status.eq_any(TxStatus::OPEN))
            .filter(transactions::due_at.le(now))
            .order(transactions::due_at.asc())
            .limit(limit)
            .for_update()
            .skip_locked()
            .load(self)
    }
}

/// Reads that are the same on every backend, used inside the local transactions below.
trait CoordReads {
    fn tx_of(&mut self, gid: &str) -> QueryResult<Option<TxRow>>;
    fn branches_of(&mut self, gid: &str) -> QueryResult<Vec<BranchRow>>;
    fn resources_of(&mut self, branches: &[BranchRow])
    -> QueryResult<HashMap<String, ResourceRow>>;
}

macro_rules! impl_coord_reads {
    ($conn:ty) => {
        impl CoordReads for $conn {
            fn tx_of(&mut self, gid: &str) -> QueryResult<Option<TxRow>> {
                transactions::table
                    .find(gid)
                    .select(TxRow::as_select())
                    .first(self)
                    .optional()
            }

            fn branches_of(&mut self, gid: &str) -> QueryResult<Vec<BranchRow>> {
                branches::table
                    .filter(branches::gid.eq(gid))
                    .select(BranchRow::as_select())
                    .order((branches::created_at.asc(), branches::branch_id.asc()))
                    .load(self)
            }

            fn resources_of(
                &mut self,
                branches: &[BranchRow],
            ) -> QueryResult<HashMap<String, ResourceRow>> {
                let names: Vec<&str> = branches
                    .iter()
                    .map(|b| b.resource.as_str())
                    .filter(|n| !n.is_empty())
                    .collect();
                if names.is_empty() {
                    return Ok(HashMap::new());
                }
                Ok(resources::table
                    .filter(resources::name.eq_any(&names))
                    .select(ResourceRow::as_select())
                    .load::<ResourceRow>(self)?
                    .into_iter()
                    .map(|r| (r.name.clone(), r))
                    .collect())
            }
        }
    };
}

impl_coord_reads!(SqliteConnection);
impl_coord_reads!(PgConnection);

// ---------------------------------------------------------------------------------------------
// Resources

/// Inserts or replaces a registration; `true` when it was new.
pub fn upsert_resource(pool: &Pool, row: ResourceRow) -> Result<(ResourceRow, bool), StoreError> {
    with_conn!(pool, |conn| conn.write_txn(|conn| {
        let existing: Option<ResourceRow> = resources::table
            .find(&row.name)
            .select(ResourceRow::as_select())
            .first(conn)
            .optional()?;
        match existing {
            Some(old) => {
                diesel::update(resources::table.find(&row.name))
                    .set((
                        resources::try_url.eq(&row.try_url),
                        resources::confirm_url.eq(&row.confirm_url),
                        resources::cancel_url.eq(&row.cancel_url),
                        resources::updated_at.eq(row.updated_at),
                    ))
                    .execute(conn)?;
                Ok((
                    ResourceRow {
                        created_at: old.created_at,
                        ..row
                    },
                    false,
                ))
            }
            None => {
                diesel::insert_into(resources::table)
                    .values(&row)
                    .execute(conn)?;
                Ok((row, true))
            }
        }
    }))
}

pub fn get_resource(pool: &Pool, name: &str) -> Result<Option<ResourceRow>, StoreError> {
    with_conn!(pool, |conn| Ok(resources::table
        .find(name)
        .select(ResourceRow::as_select())
        .first(conn)
        .optional()?))
}

pub fn list_resources(pool: &Pool) -> Result<Vec<ResourceRow>, StoreError> {
    with_conn!(pool, |conn| Ok(resources::table
        .select(ResourceRow::as_select())
        .order(resources::name.asc())
        .load(conn)?))
}

pub enum DeleteResource {
    Deleted,
    NotFound,
    /// A transaction that is not final has a branch on it.
    InUse(String),
}

pub fn delete_resource(pool: &Pool, name: &str) -> Result<DeleteResource, StoreError> {
    with_conn!(pool, |conn| conn.write_txn(|conn| {
        let exists = resources::table
            .find(name)
            .count()
            .get_result::<i64>(conn)?
            > 0;
        if !exists {
            return Ok(DeleteResource::NotFound);
        }
        let busy: Option<String> = branches::table
            .inner_join(transactions::table)
            .filter(branches::resource.eq(name))
            .filter(transactions::status.eq_any(TxStatus::OPEN))
            .select(branches::gid)
            .first(conn)
            .optional()?;
        if let Some(gid) = busy {
            return Ok(DeleteResource::InUse(gid));
        }
        diesel::delete(resources::table.find(name)).execute(conn)?;
        Ok(DeleteResource::Deleted)
    }))
}

// ---------------------------------------------------------------------------------------------
// Transactions

pub enum Begin {
    Created(TxRow),
    Existing(TxRow),
}

/// Inserts a new `trying` transaction, or returns the one with this gid. Written without
/// waiting for the WAL flush: if a crash loses it, nothing was sent on its behalf yet and the
/// client's next call finds no transaction.
pub fn begin(pool: &Pool, row: TxRow) -> Result<Begin, StoreError> {
    with_conn!(pool, |conn| conn.relaxed_txn(|conn| {
        // Insert first: the common case is a new gid, one statement.
        let inserted = diesel::insert_into(transactions::table)
            .values(&row)
            .on_conflict_do_nothing()
            .execute(conn)?;
        if inserted == 1 {
            return Ok(Begin::Created(row));
        }
        let existing: TxRow = transactions::table
            .find(&row.gid)
            .select(TxRow::as_select())
            .first(conn)?;
        Ok(Begin::Existing(existing))
    }))
}

pub fn get_tx(pool: &Pool, gid: &str) -> Result<Option<TxWithBranches>, StoreError> {
    with_conn!(pool, |conn| {
        let Some(tx) = conn.tx_of(gid)? else {
            return Ok(None);
        };
        let branches = conn.branches_of(gid)?;
        Ok(Some((tx, branches)))
    })
}

/// Newest first; `after` is the last gid of the previous page.
pub fn list_txs(
    pool: &Pool,
    status: Option<TxStatus>,
    limit: i64,
    after: Option<&str>,
) -> Result<Option<Vec<TxWithBranches>>, StoreError> {
    with_conn!(pool, |conn| {
        let mut query = transactions::table.select(TxRow::as_select()).into_boxed();
        if let Some(s) = status {
            query = query.filter(transactions::status.eq(s.as_str()));
        }
        if let Some(after) = after {
            let cursor: Option<i64> = transactions::table
                .find(after)
                .select(transactions::created_at)
                .first(conn)
                .optional()?;
            let Some(created) = cursor else {
                return Ok(None);
            };
            query = query.filter(
                transactions::created_at
                    .lt(created)
                    .or(transactions::created_at
                        .eq(created)
                        .and(transactions::gid.lt(after.to_string()))),
            );
        }
        let txs: Vec<TxRow> = query
            .order((transactions::created_at.desc(), transactions::gid.desc()))
            .limit(limit)
            .load(conn)?;
        let gids: Vec<&str> = txs.iter().map(|t| t.gid.as_str()).collect();
        let mut by_gid: HashMap<String, Vec<BranchRow>> = HashMap::new();
        for b in branches::table
            .filter(branches::gid.eq_any(&gids))
            .select(BranchRow::as_select())
            .order((branches::created_at.asc(), branches::branch_id.asc()))
            .load::<BranchRow>(conn)?
        {
            by_gid.entry(b.gid.clone()).or_default().push(b);
        }
        Ok(Some(
            txs.into_iter()
                .map(|t| {
                    let bs = by_gid.remove(&t.gid).unwrap_or_default();
                    (t, bs)
                })
                .collect(),
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// Branches

pub struct NewBranch {
    pub gid: String,
    pub branch_id: Option<String>,
    pub resource: String,
    /// Canonical JSON text of the payload.
    pub payload: String,
    pub now: i64,
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

/// Stores a branch as `trying` before its Try is sent (durable before effect). The
/// transaction's row is locked so that no commit or abort decision can slip in between the
/// status check and the insert.
pub fn prepare_branch(pool: &Pool, new: NewBranch) -> Result<PrepareBranch, StoreError> {
    with_conn!(pool, |conn| conn.write_txn(|conn| {
        let Some(tx) = conn.lock_tx(&new.gid)? else {
            return Ok(PrepareBranch::NotFound);
        };
        if tx.status() != TxStatus::Trying {
            return Ok(PrepareBranch::NotTrying(tx.status()));
        }
        if let Some(id) = &new.branch_id {
            let existing: Option<BranchRow> = branches::table
                .find((&new.gid, id))
                .select(BranchRow::as_select())
                .first(conn)
                .optional()?;
            if let Some(b) = existing {
                return Ok(if b.resource == new.resource && b.payload == new.payload {
                    PrepareBranch::Existing(b)
                } else {
                    PrepareBranch::Mismatch
                });
            }
        }
        if tx.expires_at <= new.now {
            return Ok(PrepareBranch::Expired);
        }
        let resource: Option<ResourceRow> = resources::table
            .find(&new.resource)
            .select(ResourceRow::as_select())
            .first(conn)
            .optional()?;
        let Some(resource) = resource else {
            return Ok(PrepareBranch::UnknownResource);
        };
        let mut seq = tx.branch_seq;
        let mut row = BranchRow {
            resource: new.resource.clone(),
            ..BranchRow::new(&new.gid, "", BranchStatus::Trying, &new.payload, new.now)
        };
        match &new.branch_id {
            Some(id) => {
                row.branch_id = id.clone();
                diesel::insert_into(branches::table)
                    .values(&row)
                    .execute(conn)?;
            }
            // The next number; one a client already took as an explicit id is skipped.
            None => loop {
                seq += 1;
                row.branch_id = super::model::auto_branch_id(seq);
                let inserted = diesel::insert_into(branches::table)
                    .values(&row)
                    .on_conflict_do_nothing()
                    .execute(conn)?;
                if inserted == 1 {
                    break;
                }
            },
        }
        diesel::update(transactions::table.find(&new.gid))
            .set((
                transactions::branch_seq.eq(seq),
                transactions::updated_at.eq(new.now),
            ))
            .execute(conn)?;
        Ok(PrepareBranch::New(row, resource))
    }))
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

/// Stores a DTM branch before its client sends the Try (durable before effect). The
/// coordinator never sees that Try, so the branch is `tried`: confirmed on submit, cancelled on
/// abort (the resource's barrier makes a Cancel of a Try that never ran a no-op).
pub fn register_dtm_branch(
    pool: &Pool,
    new: NewDtmBranch,
) -> Result<RegisterDtmBranch, StoreError> {
    with_conn!(pool, |conn| conn.write_txn(|conn| {
        let Some(tx) = conn.lock_tx(&new.gid)? else {
            return Ok(RegisterDtmBranch::NotFound);
        };
        let existing: Option<BranchRow> = branches::table
            .find((&new.gid, &new.branch_id))
            .select(BranchRow::as_select())
            .first(conn)
            .optional()?;
        if let Some(b) = existing {
            let same = b.payload == new.data
                && b.confirm_url.as_deref() == Some(new.confirm_url.as_str())
                && b.cancel_url.as_deref() == Some(new.cancel_url.as_str());
            return Ok(if same {
                RegisterDtmBranch::Duplicate
            } else {
                RegisterDtmBranch::Mismatch
            });
        }
        if tx.status() != TxStatus::Trying {
            return Ok(RegisterDtmBranch::NotPrepared(tx.status()));
        }
        if tx.expires_at <= new.now {
            return Ok(RegisterDtmBranch::Expired);
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
        diesel::insert_into(branches::table)
            .values(&row)
            .execute(conn)?;
        diesel::update(transactions::table.find(&new.gid))
            .set(transactions::updated_at.eq(new.now))
            .execute(conn)?;
        Ok(RegisterDtmBranch::Registered)
    }))
}

/// Records a Try's outcome, unless phase two already moved the branch on; returns the
/// transaction's status. Written without
/// waiting: if it is lost, the branch stays `trying`, which blocks commit and is cancelled on
/// abort or timeout (Cancel is safe whether or not the Try happened).
pub fn record_try(
    pool: &Pool,
    gid: &str,
    branch_id: &str,
    outcome: CallOutcome,
    response: Option<String>,
    error: Option<String>,
    now: i64,
) -> Result<TxStatus, StoreError> {
    let status = match outcome {
        CallOutcome::Done => BranchStatus::Tried,
        _ => BranchStatus::Failed,
    };
    with_conn!(pool, |conn| conn.relaxed_txn(|conn| {
        // Recorded only while the transaction is still trying: once a decision is made, phase
        // two owns the branch (and cancels it whatever its Try did).
        let still_trying = transactions::table
            .filter(transactions::gid.eq(gid))
            .filter(transactions::status.eq(TxStatus::Trying.as_str()));
        let updated = diesel::update(
            branches::table
                .find((gid, branch_id))
                .filter(branches::status.eq(BranchStatus::Trying.as_str()))
                .filter(diesel::dsl::exists(still_trying)),
        )
        .set((
            branches::status.eq(status.as_str()),
            branches::try_outcome.eq(outcome.as_str()),
            branches::response.eq(response),
            branches::last_error.eq(error),
            branches::attempts.eq(branches::attempts + 1),
            branches::updated_at.eq(now),
        ))
        .execute(conn)?;
        if updated == 1 {
            return Ok(TxStatus::Trying);
        }
        let tx: String = transactions::table
            .find(gid)
            .select(transactions::status)
            .first(conn)?;
        Ok(TxStatus::parse(&tx).unwrap_or(TxStatus::Trying))
    }))
}

// ---------------------------------------------------------------------------------------------
// Decisions and phase two

pub enum Decide {
    NotFound,
    /// We moved the transaction and hold its lease: drive it (everything phase two needs was
    /// read in the same local transaction).
    Decided(DriveInput),
    /// Nothing changed; the transaction is in this status.
    Unchanged(TxStatus),
    /// Commit asked after `expires_at`: the transaction was moved to aborting instead, and we
    /// hold its lease.
    Expired(DriveInput),
    /// Commit asked while a branch's Try is still open or has failed.
    BranchOpen(String),
}

pub struct Decision<'a> {
    pub gid: &'a str,
    pub to: TxStatus,
    pub reason: Option<&'a str>,
    pub owner: &'a str,
    pub lease_ms: i64,
    pub now: i64,
}

/// The decision: `trying → committing` or `trying → aborting`, made durable before any
/// Confirm or Cancel is sent, with the lease taken in the same write.
pub fn decide(pool: &Pool, d: Decision<'_>) -> Result<Decide, StoreError> {
    with_conn!(pool, |conn| conn.write_txn(|conn| {
        let Some(tx) = conn.lock_tx(d.gid)? else {
            return Ok(Decide::NotFound);
        };
        // Only `trying` moves to a decision; nothing crosses from one path to the other.
        if !tx.status().can_move_to(d.to) {
            return Ok(Decide::Unchanged(tx.status()));
        }
        let mut to = d.to;
        let mut reason = d.reason.map(str::to_string);
        let mut expired = false;
        let branches = conn.branches_of(d.gid)?;
        if to == TxStatus::Committing {
            if tx.expires_at <= d.now {
                to = TxStatus::Aborting;
                reason = Some("timed out before commit".into());
                expired = true;
            } else if let Some(b) = branches
                .iter()
                .find(|b| matches!(b.status(), BranchStatus::Trying | BranchStatus::Failed))
            {
                return Ok(Decide::BranchOpen(format!(
                    "branch {} is {}",
                    b.branch_id, b.status
                )));
            }
        }
        diesel::update(transactions::table.find(d.gid))
            .set((
                transactions::status.eq(to.as_str()),
                transactions::reason.eq(&reason),
                transactions::updated_at.eq(d.now),
                transactions::lease_owner.eq(d.owner),
                transactions::due_at.eq(d.now + d.lease_ms),
            ))
            .execute(conn)?;
        let row = TxRow {
            status: to.as_str().into(),
            reason,
            updated_at: d.now,
            lease_owner: Some(d.owner.to_string()),
            due_at: d.now + d.lease_ms,
            ..tx
        };
        let resources = conn.resources_of(&branches)?;
        let input = (row, branches, resources);
        Ok(if expired {
            Decide::Expired(input)
        } else {
            Decide::Decided(input)
        })
    }))
}

/// A transaction, its branches and their resources by name.
pub type DriveInput = (TxRow, Vec<BranchRow>, HashMap<String, ResourceRow>);

/// What phase two needs: the transaction, its branches and their resources' current URLs
/// (resolved now, so a re-registration redirects in-flight transactions).
pub fn load_for_drive(pool: &Pool, gid: &str) -> Result<Option<DriveInput>, StoreError> {
    with_conn!(pool, |conn| {
        let Some(tx) = conn.tx_of(gid)? else {
            return Ok(None);
        };
        let branches = conn.branches_of(gid)?;
        let resources = conn.resources_of(&branches)?;
        Ok(Some((tx, branches, resources)))
    })
}

pub struct DriveResult<'a> {
    pub gid: &'a str,
    pub owner: &'a str,
    /// The transaction and its branches as the driver loaded them under its lease (nobody else
    /// changes whether a branch still needs phase two while the lease is held).
    pub tx: TxRow,
    pub branches: Vec<BranchRow>,
    pub from: TxStatus,
    pub op: Op,
    /// Per called branch: Ok, or the error text.
    pub calls: Vec<(String, Result<(), String>)>,
    pub now: i64,
    /// When not everything is done: the retry time.
    pub retry_at: i64,
}

pub enum Finish {
    /// The transaction reached its final status (we made the change); its rows now.
    Final(TxStatus, TxWithBranches),
    /// Some branches still need the call: the new attempt count, and the rows now.
    Retry(i64, TxWithBranches),
    /// Another driver took over or finished it first.
    Lost,
}

/// Records a phase-two pass in one local transaction: each branch's result and then, only if no
/// branch is left open, the final status — decided once, under the lease, never by concurrent
/// per-branch completions. Written without waiting for the WAL flush: if lost, recovery finds
/// the transaction still decided and repeats the (idempotent) calls.
pub fn finish_drive(pool: &Pool, r: DriveResult<'_>) -> Result<Finish, StoreError> {
    let done_status = BranchStatus::after(r.op);
    let done: Vec<&str> = r
        .calls
        .iter()
        .filter(|(_, res)| res.is_ok())
        .map(|(id, _)| id.as_str())
        .collect();
    with_conn!(pool, |conn| conn.relaxed_txn(|conn| {
        if !done.is_empty() {
            diesel::update(
                branches::table
                    .filter(branches::gid.eq(r.gid))
                    .filter(branches::branch_id.eq_any(&done)),
            )
            .set((
                branches::status.eq(done_status.as_str()),
                branches::attempts.eq(branches::attempts + 1),
                branches::last_error.eq(None::<String>),
                branches::updated_at.eq(r.now),
            ))
            .execute(conn)?;
        }
        for (branch_id, result) in &r.calls {
            if let Err(e) = result {
                diesel::update(branches::table.find((r.gid, branch_id)))
                    .set((
                        branches::attempts.eq(branches::attempts + 1),
                        branches::last_error.eq(e),
                        branches::updated_at.eq(r.now),
                    ))
                    .execute(conn)?;
            }
        }
        let mut branches = r.branches.clone();
        for b in branches.iter_mut() {
            match r.calls.iter().find(|(id, _)| *id == b.branch_id) {
                Some((_, Ok(()))) => {
                    b.status = done_status.as_str().into();
                    b.attempts += 1;
                    b.last_error = None;
                    b.updated_at = r.now;
                }
                Some((_, Err(e))) => {
                    b.attempts += 1;
                    b.last_error = Some(e.clone());
                    b.updated_at = r.now;
                }
                None => {}
            }
        }
        // Only the lease holder of the still-decided transaction writes its outcome.
        let mine = transactions::table
            .filter(transactions::gid.eq(r.gid))
            .filter(transactions::status.eq(r.from.as_str()))
            .filter(transactions::lease_owner.eq(r.owner));
        let open = branches.iter().filter(|b| b.status().needs(r.op)).count();
        if open == 0 {
            let to = r.from.final_status().unwrap_or(r.from);
            let n = diesel::update(mine)
                .set((
                    transactions::status.eq(to.as_str()),
                    transactions::finished_at.eq(r.now),
                    transactions::updated_at.eq(r.now),
                    transactions::next_retry_at.eq(None::<i64>),
                    transactions::lease_owner.eq(None::<String>),
                ))
                .execute(conn)?;
            if n == 0 {
                return Ok(Finish::Lost);
            }
            let tx = TxRow {
                status: to.as_str().into(),
                finished_at: Some(r.now),
                updated_at: r.now,
                next_retry_at: None,
                lease_owner: None,
                ..r.tx.clone()
            };
            return Ok(Finish::Final(to, (tx, branches)));
        }
        let error = r
            .calls
            .iter()
            .find_map(|(id, res)| res.as_ref().err().map(|e| format!("branch {id}: {e}")));
        let n = diesel::update(mine)
            .set((
                transactions::attempts.eq(transactions::attempts + 1),
                transactions::next_retry_at.eq(r.retry_at),
                transactions::due_at.eq(r.retry_at),
                transactions::last_error.eq(&error),
                transactions::updated_at.eq(r.now),
                transactions::lease_owner.eq(None::<String>),
            ))
            .execute(conn)?;
        if n == 0 {
            return Ok(Finish::Lost);
        }
        let attempts = r.tx.attempts + 1;
        let tx = TxRow {
            attempts,
            next_retry_at: Some(r.retry_at),
            due_at: r.retry_at,
            last_error: error,
            updated_at: r.now,
            lease_owner: None,
            ..r.tx.clone()
        };
        Ok(Finish::Retry(attempts, (tx, branches)))
    }))
}

/// A transaction recovery claimed: `from` is the status it had, `to` the one it has now
/// (a `trying` one past its deadline becomes `aborting`).
pub struct Claimed {
    pub gid: String,
    pub from: TxStatus,
    pub to: TxStatus,
}

/// Claims up to `limit` due transactions for this owner with a lease, aborting the `trying`
/// ones whose deadline passed (that decision is durable before any Cancel).
pub fn claim_due(
    pool: &Pool,
    owner: &str,
    now: i64,
    lease_ms: i64,
    limit: i64,
) -> Result<Vec<Claimed>, StoreError> {
    with_conn!(pool, |conn| conn.write_txn(|conn| {
        let due = conn.due(now, limit)?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let gids: Vec<&str> = due.iter().map(|(g, _)| g.as_str()).collect();
        diesel::update(transactions::table.filter(transactions::gid.eq_any(&gids)))
            .set((
                transactions::lease_owner.eq(owner),
                transactions::due_at.eq(now + lease_ms),
            ))
            .execute(conn)?;
        let expired: Vec<&str> = due
            .iter()
            .filter(|(_, s)| s == TxStatus::Trying.as_str())
            .map(|(g, _)| g.as_str())
            .collect();
        if !expired.is_empty() {
            diesel::update(
                transactions::table
                    .filter(transactions::gid.eq_any(&expired))
                    .filter(transactions::status.eq(TxStatus::Trying.as_str())),
            )
            .set((
                transactions::status.eq(TxStatus::Aborting.as_str()),
                transactions::reason.eq("timed out"),
                transactions::updated_at.eq(now),
            ))
            .execute(conn)?;
        }
        Ok(due
            .into_iter()
            .map(|(gid, s)| {
                let from = TxStatus::parse(&s).unwrap_or(TxStatus::Trying);
                let to = if from == TxStatus::Trying {
                    TxStatus::Aborting
                } else {
                    from
                };
                Claimed { gid, from, to }
            })
            .collect())
    }))
}

/// Decided transactions that have failed at least `threshold` attempts.
pub fn count_stuck(pool: &Pool, threshold: i64) -> Result<i64, StoreError> {
    with_conn!(pool, |conn| Ok(transactions::table
        .filter(
            transactions::status
                .eq_any([TxStatus::Committing.as_str(), TxStatus::Aborting.as_str()])
        )
        .filter(transactions::attempts.ge(threshold))
        .count()
        .get_result::<i64>(conn)?))
}
