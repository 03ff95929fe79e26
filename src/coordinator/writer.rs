//! The writer: every transaction write of the coordinator goes through one thread that commits
//! whatever has queued up while its previous batch was being committed, in one local transaction
//! (group commit; see [`batch::write_batch`]).
//!
//! Under load this turns several round trips and a commit per write into a handful of statements
//! and one commit per batch, shared by all the transactions in flight; batches then start at most
//! one interval apart, so that more writes share each. With no load a batch is a single write
//! and nothing waits for company. A batch that holds a write which precedes an effect elsewhere
//! (a branch before its Try, a decision before phase two) commits durably; a batch of writes that
//! recovery can redo commits without waiting for the WAL flush (see [`Write::durable`]). Either
//! way a write is answered only after its batch committed, so whatever a client does next sees
//! it, on this coordinator or any other on the same database.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::batch;
use super::metrics::Metrics;
use super::model::TxStatus;
use super::store::TxRow;
use super::unit::{
    Begin, Decide, Decision, DriveResult, Finish, NewBranch, NewDtmBranch, PrepareBranch,
    RegisterDtmBranch, TryOutcome, Write, Written,
};
use crate::db::{Commits, Pool, StoreError};

/// Most writes in one batch: enough to share a commit widely, small enough that one batch never
/// holds its locks for long.
const MAX_BATCH: usize = 256;

struct Job {
    write: Write,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

pub struct Writer {
    jobs: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
}

macro_rules! typed_write {
    ($(#[$doc:meta])* $name:ident($input:ty) -> $answer:ty, $variant:ident) => {
        $(#[$doc])*
        pub async fn $name(&self, input: $input) -> Result<$answer, StoreError> {
            match self.write(Write::$variant(input)).await? {
                Written::$variant(answer) => Ok(answer),
                _ => Err(StoreError::Unavailable(
                    concat!("the writer answered ", stringify!($name), " with another kind").into(),
                )),
            }
        }
    };
}

impl Writer {
    /// Starts the writer thread, with two connections to the database at `url` (migrated
    /// already): one whose commits wait for the WAL flush and one whose commits do not. Under
    /// load, batches start at most `interval` apart. The thread stops when the writer is
    /// dropped, after answering what it holds.
    pub fn start(url: &str, interval: Duration, metrics: &Arc<Metrics>) -> Result<Writer, String> {
        let durable = Line::open(url, Commits::Durable)?;
        let relaxed = Line::open(url, Commits::Relaxed)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let (pacer, m) = (Pacer::new(interval), metrics.clone());
        std::thread::Builder::new()
            .name("tccd-writer".into())
            .spawn(move || serve(&queue, durable, relaxed, pacer, &m))
            .map_err(|e| format!("cannot start the database writer: {e}"))?;
        Ok(Writer {
            jobs,
            metrics: metrics.clone(),
        })
    }

    async fn write(&self, write: Write) -> Result<Written, StoreError> {
        let (kind, started) = (write.kind(), Instant::now());
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { write, reply })
            .map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?;
        let answer = answer.await.map_err(|_| {
            StoreError::Unavailable("the database writer stopped before answering".into())
        })?;
        self.metrics
            .write_took(kind, started.elapsed().as_secs_f64());
        answer
    }

    typed_write!(
        /// Inserts a new `trying` transaction, or returns the one with this gid.
        begin(TxRow) -> Begin, Begin
    );
    typed_write!(
        /// Stores a branch as `trying` before its Try is sent.
        add_branch(NewBranch) -> PrepareBranch, AddBranch
    );
    typed_write!(
        /// Stores a DTM branch before its client sends the Try.
        add_dtm_branch(NewDtmBranch) -> RegisterDtmBranch, AddDtmBranch
    );
    typed_write!(
        /// Records a Try's outcome; returns the transaction's status (None: no such transaction).
        record_try(TryOutcome) -> Option<TxStatus>, RecordTry
    );
    typed_write!(
        /// The decision `trying → committing | aborting`, with the lease.
        decide(Decision) -> Decide, Decide
    );
    typed_write!(
        /// A phase-two pass's results and, when nothing is left open, the final status.
        finish(DriveResult) -> Finish, Finish
    );
}

/// The writer thread: the first write that comes, then (after the pacer's wait) every write
/// queued by then, as one batch; until the writer is dropped.
fn serve(
    queue: &mpsc::Receiver<Job>,
    mut durable: Line,
    mut relaxed: Line,
    mut pacer: Pacer,
    metrics: &Metrics,
) {
    let mut failures = 0;
    while let Ok(first) = queue.recv() {
        std::thread::sleep(pacer.wait(Instant::now()));
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (started, writes) = (Instant::now(), batch.len());
        pacer.started(started, writes);
        let is_durable = batch.iter().any(|j| j.write.durable());
        let line = if is_durable {
            &mut durable
        } else {
            &mut relaxed
        };
        line.commit(batch, &mut failures);
        metrics.batch(is_durable, writes, started.elapsed().as_secs_f64());
    }
}

/// How long a connection may sit unused before it is checked ahead of a batch.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// One of the writer's two connections.
struct Line {
    pool: Pool,
    used: Instant,
    /// The writer's count of unavailable-database failures when this line was last used.
    failures_seen: u64,
}

impl Line {
    fn open(url: &str, commits: Commits) -> Result<Line, String> {
        Ok(Line {
            pool: Pool::single_writer(url, commits)?,
            used: Instant::now(),
            failures_seen: 0,
        })
    }

    /// Commits a batch; `failures` counts the batches the database was unavailable for.
    fn commit(&mut self, batch: Vec<Job>, failures: &mut u64) {
        // A connection may have been closed by the server since its last use (a restart, an
        // outage the other line ran into, an idle timeout): check it first, so that a dead
        // connection is replaced before it can fail a batch.
        if self.failures_seen != *failures || self.used.elapsed() > IDLE_CHECK {
            let _ = self.pool.ping();
        }
        if !commit(&self.pool, batch) {
            *failures += 1;
        }
        self.used = Instant::now();
        self.failures_seen = *failures;
    }
}

/// Batches averaging more than this many writes mean the coordinator is busy.
const BUSY_BATCH: f64 = 2.0;

/// When the next batch may start: at once while batches are small (a lone client never waits
/// for company), at most one interval after the previous one while they are large (more writes
/// share each commit, and the database does less work per write).
struct Pacer {
    interval: Duration,
    /// Moving average of writes per batch.
    average: f64,
    last_start: Option<Instant>,
}

impl Pacer {
    fn new(interval: Duration) -> Pacer {
        Pacer {
            interval,
            average: 1.0,
            last_start: None,
        }
    }

    /// How long to wait, at `now`, before starting the next batch.
    fn wait(&self, now: Instant) -> Duration {
        match self.last_start {
            Some(last) if self.average > BUSY_BATCH => {
                (last + self.interval).saturating_duration_since(now)
            }
            _ => Duration::ZERO,
        }
    }

    fn started(&mut self, at: Instant, writes: usize) {
        self.last_start = Some(at);
        self.average = 0.9 * self.average + 0.1 * writes as f64;
    }
}

/// Commits a batch and answers each of its writes.
/// Returns false when the database was unavailable.
fn commit(pool: &Pool, batch: Vec<Job>) -> bool {
    let (writes, replies): (Vec<Write>, Vec<_>) =
        batch.into_iter().map(|j| (j.write, j.reply)).unzip();
    match run(pool, &writes) {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
            true
        }
        // A query error (a conflict with another coordinator, such as a begin of the same gid,
        // or a deadlock it broke) fails the whole batch: run each write alone, so that it reads
        // what the other coordinator wrote and one write's trouble is not the others'.
        Err(StoreError::Query(e)) => {
            log::debug!(
                "a batch of {} writes failed ({e}); committing them one by one",
                writes.len()
            );
            for (write, reply) in writes.iter().zip(replies) {
                let _ = reply.send(run_alone(pool, write));
            }
            true
        }
        // The database is unavailable: every write of the batch gets that answer.
        Err(StoreError::Unavailable(why)) => {
            log::warn!("a batch of {} writes was not written: {why}", writes.len());
            for reply in replies {
                let _ = reply.send(Err(StoreError::Unavailable(why.clone())));
            }
            false
        }
    }
}

/// [`batch::write_batch`], with a panic turned into an error so the writer keeps serving.
fn run(pool: &Pool, writes: &[Write]) -> Result<Vec<Written>, StoreError> {
    catch_unwind(AssertUnwindSafe(|| batch::write_batch(pool, writes))).unwrap_or_else(|_| {
        Err(StoreError::Unavailable(
            "the database writer failed on this batch".into(),
        ))
    })
}

/// Attempts of a write on its own after its batch failed on a query error.
const ALONE_ATTEMPTS: u32 = 3;

/// One write in its own local transaction. It may meet the same conflict again: another
/// coordinator that also fell back to single writes may insert the same gid first. Its insert
/// then waited for that transaction to end, so the next attempt reads what it committed.
fn run_alone(pool: &Pool, write: &Write) -> Result<Written, StoreError> {
    let mut attempt = 1;
    loop {
        let answer = run(pool, std::slice::from_ref(write))
            .and_then(|mut answers| answers.pop().ok_or_else(no_answer));
        match answer {
            Err(StoreError::Query(e)) if attempt < ALONE_ATTEMPTS => {
                log::debug!("a {} write failed alone ({e}); trying again", write.kind());
                attempt += 1;
            }
            answer => return answer,
        }
    }
}

fn no_answer() -> StoreError {
    StoreError::Unavailable("the database writer gave no answer".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_writer_never_waits_and_a_busy_one_keeps_the_interval() {
        let interval = Duration::from_millis(5);
        let t0 = Instant::now();
        let mut pacer = Pacer::new(interval);
        assert_eq!(pacer.wait(t0), Duration::ZERO);
        // One write at a time: no waiting, however soon the next one comes.
        for i in 0..50 {
            pacer.started(t0 + Duration::from_micros(i), 1);
        }
        assert_eq!(pacer.wait(t0 + Duration::from_micros(50)), Duration::ZERO);
        // Large batches: the next one starts one interval after the last.
        let busy = t0 + Duration::from_millis(1);
        for _ in 0..30 {
            pacer.started(busy, 20);
        }
        assert_eq!(
            pacer.wait(busy + Duration::from_millis(2)),
            Duration::from_millis(3)
        );
        assert_eq!(pacer.wait(busy + Duration::from_millis(7)), Duration::ZERO);
        // Load goes away: the average falls and waiting stops.
        for _ in 0..40 {
            pacer.started(busy, 1);
        }
        assert_eq!(pacer.wait(busy), Duration::ZERO);
        // An interval of zero never waits.
        let mut eager = Pacer::new(Duration::ZERO);
        eager.started(busy, 100);
        assert_eq!(eager.wait(busy), Duration::ZERO);
    }
}
