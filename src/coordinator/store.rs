//! The coordinator's rows and its reads, resource registrations and recovery claims (diesel).
//! Every function here is blocking and takes its connection from the pool itself; callers run it
//! through `Pool::run`. Each function is one local transaction with no I/O inside. The
//! transaction writes go through the writer instead (see [`super::batch`]).

use std::collections::HashMap;

use diesel::prelude::*;

use super::model::{BranchStatus, Op, TxStatus};
use super::unit::DriveInput;
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
#[diesel(table_name = transactions, treat_none_as_default_value = false)]
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
#[diesel(table_name = branches, treat_none_as_default_value = false)]
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
    pub fn new(
        gid: &str,
        branch_id: &str,
        status: BranchStatus,
        payload: &str,
        now: i64,
    ) -> BranchRow {
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

/// Reads that differ per backend.
trait CoordConn: DbConn {
    /// Open transactions whose due time has passed, skipping rows another coordinator is
    /// claiming right now (Postgres `FOR UPDATE SKIP LOCKED`).
    fn due(&mut self, now: i64, limit: i64) -> QueryResult<Vec<(String, String)>>;
}

impl CoordConn for SqliteConnection {
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
