//! Phase two: Confirm or Cancel every branch of a decided transaction, in parallel, by whoever
//! holds its lease — the request handler that made the decision or the recovery worker.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;

use super::invoker::Invoker;
use super::metrics::Metrics;
use super::model::{CallOutcome, TxStatus, backoff_ms};
use super::store::{self, TxWithBranches};
use super::unit::{Decide, Decision, DriveInput, DriveResult, Finish};
use super::writer::Writer;
use crate::db::{Pool, StoreError};
use crate::failpoints::crash_point;
use crate::time::now_ms;

pub struct EngineConfig {
    /// This process's lease identity.
    pub owner: String,
    pub lease_ms: i64,
    pub retry_base_ms: u64,
    pub retry_cap_ms: u64,
    pub stuck_after_attempts: i64,
    pub alert_webhook: Option<String>,
}

/// What a phase-two pass left behind.
pub struct Driven {
    pub status: TxStatus,
    /// The transaction and its branches as the pass left them, when known without a read.
    pub rows: Option<TxWithBranches>,
}

pub struct Engine {
    pub pool: Pool,
    pub writer: Writer,
    pub invoker: Invoker,
    pub metrics: Arc<Metrics>,
    pub cfg: EngineConfig,
}

impl Engine {
    /// Makes the decision `trying → to` durable, taking the lease (see [`store::decide`]).
    pub async fn decide(
        &self,
        gid: &str,
        to: TxStatus,
        reason: Option<&str>,
    ) -> Result<Decide, StoreError> {
        self.writer
            .decide(Decision {
                gid: gid.to_string(),
                to,
                reason: reason.map(str::to_string),
                owner: self.cfg.owner.clone(),
                lease_ms: self.cfg.lease_ms,
                now: now_ms(),
            })
            .await
    }

    /// Moves a `trying` transaction to aborting and drives its cancels. Returns the status it
    /// has afterwards (None: no such transaction).
    pub async fn abort(&self, gid: &str, reason: &str) -> Result<Option<TxStatus>, StoreError> {
        let decided = self.decide(gid, TxStatus::Aborting, Some(reason)).await?;
        match decided {
            Decide::NotFound => Ok(None),
            Decide::Decided(input) | Decide::Expired(input) => {
                self.metrics
                    .transition(Some(TxStatus::Trying), TxStatus::Aborting);
                log::info!("gid={gid} trying -> aborting ({reason})");
                crash_point("coord_after_decision");
                Ok(Some(self.drive_loaded(input).await?.status))
            }
            Decide::Unchanged(s) => Ok(Some(s)),
            Decide::BranchOpen(_) => Ok(Some(TxStatus::Trying)),
        }
    }

    /// Loads a transaction and runs one phase-two pass over it (see [`Engine::drive_loaded`]).
    pub async fn drive(&self, gid: &str) -> Result<Option<TxStatus>, StoreError> {
        let g = gid.to_string();
        let Some(input) = self.pool.run(move |p| store::load_for_drive(p, &g)).await? else {
            return Ok(None);
        };
        Ok(Some(self.drive_loaded(input).await?.status))
    }

    /// One phase-two pass over a transaction whose lease this process holds. Every branch that
    /// still needs the call gets it, concurrently; then one write records the results and, if
    /// nothing is left open, the final status. Returns the status afterwards, with the rows when
    /// this pass wrote them.
    pub async fn drive_loaded(&self, input: DriveInput) -> Result<Driven, StoreError> {
        let (tx, branches, resources) = input;
        let gid = tx.gid.as_str();
        let from = tx.status();
        let Some(op) = from.phase_two() else {
            return Ok(Driven {
                status: from,
                rows: None,
            });
        };
        if tx.lease_owner.as_deref() != Some(self.cfg.owner.as_str()) {
            // Somebody else drives it; leave it to them.
            return Ok(Driven {
                status: from,
                rows: None,
            });
        }
        let targets: Vec<_> = branches.iter().filter(|b| b.status().needs(op)).collect();
        let dtm = super::dtm::Options::of(&tx);
        let request_timeout = dtm.request_timeout();
        let calls = targets.iter().map(|b| {
            let resource = resources.get(&b.resource);
            async move {
                let res = match (b.dtm_url(op), resource) {
                    (Some(url), _) => {
                        self.invoker
                            .call_dtm(url, op, gid, &b.branch_id, &b.payload, request_timeout)
                            .await
                    }
                    (None, Some(resource)) => {
                        self.invoker
                            .call(resource.url(op), op, gid, &b.branch_id, &b.payload)
                            .await
                    }
                    (None, None) => {
                        return (
                            b.branch_id.clone(),
                            Err(format!("resource {} is not registered", b.resource)),
                        );
                    }
                };
                self.metrics.call(op, res.outcome);
                if res.outcome == CallOutcome::Done {
                    log::debug!("gid={gid} branch={} {op} done", b.branch_id);
                    crash_point("coord_after_phase_two_call");
                    (b.branch_id.clone(), Ok(()))
                } else {
                    let error = res.error.unwrap_or_else(|| format!("{op} failed"));
                    log::warn!("gid={gid} branch={} {error}", b.branch_id);
                    (b.branch_id.clone(), Err(error))
                }
            }
        });
        let results = join_all(calls).await;

        let now = now_ms();
        let delay = backoff_ms(
            (tx.attempts + 1).clamp(1, 64) as u32,
            dtm.retry_base_ms().unwrap_or(self.cfg.retry_base_ms),
            self.cfg.retry_cap_ms,
            rand::random::<f64>(),
        );
        let finish = self
            .writer
            .finish(DriveResult {
                gid: gid.to_string(),
                owner: self.cfg.owner.clone(),
                from,
                op,
                calls: results,
                now,
                retry_at: now + delay as i64,
            })
            .await?;
        match finish {
            Finish::Final(to, rows) => {
                self.metrics.transition(Some(from), to);
                log::info!("gid={gid} {from} -> {to}");
                Ok(Driven {
                    status: to,
                    rows: Some(rows),
                })
            }
            Finish::Retry(attempts, rows) => {
                log::warn!(
                    "gid={gid} {from}: {op} attempt {attempts} incomplete, retry in {delay} ms"
                );
                if attempts == self.cfg.stuck_after_attempts {
                    log::error!(
                        "gid={gid} is stuck: {attempts} failed {op} attempts; still retrying"
                    );
                    self.alert_stuck(gid, from, attempts);
                }
                Ok(Driven {
                    status: from,
                    rows: Some(rows),
                })
            }
            Finish::Lost => {
                let g = gid.to_string();
                let rows = self.pool.run(move |p| store::get_tx(p, &g)).await?;
                Ok(Driven {
                    status: rows.as_ref().map_or(from, |(t, _)| t.status()),
                    rows,
                })
            }
        }
    }

    fn alert_stuck(&self, gid: &str, status: TxStatus, attempts: i64) {
        let Some(url) = self.cfg.alert_webhook.clone() else {
            return;
        };
        let client = self.invoker.client().clone();
        let body = serde_json::json!({"event": "transaction_stuck", "gid": gid, "status": status.as_str(), "attempts": attempts});
        tokio::spawn(async move {
            let sent = client
                .post(&url)
                .json(&body)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if let Err(e) = sent.and_then(|r| r.error_for_status()) {
                log::warn!("alert webhook {url} failed: {e}");
            }
        });
    }
}
