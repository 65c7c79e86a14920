//! The SQLite store's threads. rusqlite is blocking, so the store's work runs
//! on threads of its own: one writer thread owning the write connection
//! (SQLite has one writer at a time anyway) and a few reader threads for
//! scans, each with a prepared-statement cache. Callers hand them jobs over
//! channels. Keyed lookups (one row by its key, on a WAL file whose readers
//! never wait for the writer) take microseconds: they run on the caller's
//! thread on a small pool of connections, which costs less than the two
//! thread hand-overs and wake-ups a job pays.
//!
//! The writer commits in groups: it takes every write job waiting, runs each
//! under its own savepoint inside one transaction and commits once. Each job
//! still succeeds or fails alone (a conflict rolls back to its savepoint), but
//! a busy system pays for one WAL commit per group instead of one per step.
//!
//! Durability: the writer runs `synchronous=FULL`, so in WAL mode every
//! commit syncs the WAL before the callers hear of it, i.e. one fsync per
//! group. A step publishes its events and acks its input only after its
//! commit answered, so a power loss can no longer roll back a commit whose
//! events already left (with `NORMAL` it could: the WAL was synced only at
//! checkpoints). Readers never commit, so they keep `NORMAL`.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::store::StoreError;

/// Reader threads: WAL lets them read while the writer writes.
const READERS: usize = 3;
/// Connections for keyed lookups on the callers' threads (a few per core).
const LOOKUPS: usize = 4;
/// Most write jobs committed together.
const MAX_GROUP: usize = 128;
/// The writer's `synchronous` pragma: a commit is on disk before it answers.
const WRITER_SYNCHRONOUS: &str = "FULL";

/// Answers a write job's caller once the group's commit is known.
type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Runs inside the group's transaction (or learns it could not start) and
/// says whether to keep its changes.
type WriteJob = Box<dyn FnOnce(Result<&Connection, &StoreError>) -> (bool, Answer) + Send>;
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// The writer's and the readers' job queues.
pub(super) struct Threads {
    /// Jobs for the one writer thread, committed in groups.
    writes: mpsc::Sender<WriteJob>,
    /// One queue per reader thread, used in turn.
    reads: Vec<mpsc::Sender<ReadJob>>,
    /// Which reader gets the next read.
    next_reader: AtomicUsize,
    /// Connections for keyed lookups, used in turn.
    lookups: Vec<Mutex<Connection>>,
    /// Which connection the next lookup takes.
    next_lookup: AtomicUsize,
}

impl Threads {
    /// Opens (creating if needed) the database file, runs `schema` on the
    /// writer connection, and starts the threads.
    pub(super) fn open(path: &Path, schema: fn(&Connection) -> rusqlite::Result<()>) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|error| StoreError::Unavailable(format!("cannot create {}: {error}", dir.display())))?;
        }
        let writer =
            connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE, WRITER_SYNCHRONOUS)?;
        schema(&writer).map_err(unavailable)?;
        let (writes, jobs) = mpsc::channel();
        spawn_thread("sqlite-writer", move || write_groups(&writer, &jobs))?;
        let mut reads = Vec::with_capacity(READERS);
        for index in 0..READERS {
            let reader = connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE, "NORMAL")?;
            let (sender, jobs) = mpsc::channel::<ReadJob>();
            spawn_thread(&format!("sqlite-reader-{index}"), move || {
                while let Ok(job) = jobs.recv() {
                    // A panicking job must not take the thread (and the store) with it.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&reader)));
                }
            })?;
            reads.push(sender);
        }
        let lookups = (0..LOOKUPS)
            .map(|_| connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE, "NORMAL").map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(Self { writes, reads, next_reader: AtomicUsize::new(0), lookups, next_lookup: AtomicUsize::new(0) })
    }

    /// A keyed lookup, on the caller's thread (see the module comment);
    /// scans go to a reader thread with [`Threads::read`].
    pub(super) fn lookup<T>(&self, work: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let index = self.next_lookup.fetch_add(1, Ordering::Relaxed) % self.lookups.len();
        // A panic in another lookup leaves the connection as usable as before.
        let connection = self.lookups[index].lock().unwrap_or_else(PoisonError::into_inner);
        work(&connection)
    }

    pub(super) async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = oneshot::channel();
        let job: ReadJob = Box::new(move |connection| {
            let _ = answer.send(work(connection));
        });
        let index = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.reads.len();
        self.reads[index].send(job).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    /// Runs `work` in the writer's next group; its changes are kept when
    /// `keep` says so and the group commits.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        keep: fn(&T) -> bool,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = oneshot::channel();
        let job: WriteJob = Box::new(move |connection| {
            let outcome = match connection {
                Ok(connection) => work(connection),
                Err(error) => Err(StoreError::Unavailable(error.to_string())),
            };
            let kept = outcome.as_ref().is_ok_and(keep);
            let reply: Answer = Box::new(move |group| {
                let _ = answer.send(group.and(outcome));
            });
            (kept, reply)
        });
        self.writes.send(job).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

impl Threads {
    /// Runs `work` in the writer's next group without waiting for it: for
    /// bookkeeping whose loss is harmless (a failure is logged).
    pub(super) fn write_detached(&self, work: impl FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static) {
        let job: WriteJob = Box::new(move |connection| {
            let outcome = connection.map_err(|error| StoreError::Unavailable(error.to_string())).and_then(work);
            let kept = outcome.is_ok();
            let reply: Answer = Box::new(move |group| {
                if let Err(error) = group.and(outcome) {
                    tracing::debug!(%error, "a detached write was lost");
                }
            });
            (kept, reply)
        });
        if self.writes.send(job).is_err() {
            tracing::debug!("a detached write was lost: the writer has stopped");
        }
    }
}

fn spawn_thread(name: &str, body: impl FnOnce() + Send + 'static) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map(drop)
        .map_err(|error| StoreError::Unavailable(format!("cannot start a store thread: {error}")))
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store's threads have stopped".to_owned())
}

/// The writer thread: one transaction per group of waiting jobs, a savepoint per job.
fn write_groups(connection: &Connection, jobs: &mpsc::Receiver<WriteJob>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        group.extend(jobs.try_iter().take(MAX_GROUP - 1));
        // IMMEDIATE takes the write lock up front (waiting up to busy_timeout
        // for other processes), so every job sees one consistent state.
        if let Err(error) = run(connection, "BEGIN IMMEDIATE").map_err(unavailable) {
            for job in group {
                let (_, answer) = job(Err(&error));
                answer(Err(StoreError::Unavailable(error.to_string())));
            }
            continue;
        }
        let mut answers = Vec::with_capacity(group.len());
        for job in group {
            let _ = run(connection, "SAVEPOINT job");
            let (keep, answer) = match std::panic::catch_unwind(AssertUnwindSafe(|| job(Ok(connection)))) {
                Ok(done) => done,
                Err(_) => (false, Box::new(|_| ()) as Answer),
            };
            if !keep {
                let _ = run(connection, "ROLLBACK TO job");
            }
            let _ = run(connection, "RELEASE job");
            answers.push(answer);
        }
        let committed = run(connection, "COMMIT").map_err(unavailable);
        if committed.is_err() {
            let _ = run(connection, "ROLLBACK");
        }
        for answer in answers {
            answer(committed.as_ref().map(drop).map_err(|error| StoreError::Unavailable(error.to_string())));
        }
    }
}

/// Runs one statement of the writer's transaction control, prepared once
/// (these run several times per group: parsing each time showed in profiles).
fn run(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([]).map(drop)
}

/// Opens a connection with `synchronous` (see the module comment for why
/// the writer's is `FULL`).
fn connect(path: &Path, flags: OpenFlags, synchronous: &str) -> Result<Connection, StoreError> {
    let connection = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(unavailable)?;
    // WAL: readers and the writer do not block each other, and several
    // processes can share the file.
    connection
        .execute_batch(&format!("PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous}; PRAGMA foreign_keys=ON;"))
        .map_err(unavailable)?;
    // No memory map (`mmap_size` stays 0): a connection drops its whole
    // mapping (munmap, a TLB shoot-down on every core) whenever it starts a
    // read after another commit, i.e. at nearly every lookup under load;
    // reading the few pages a lookup needs with pread costs less (profiled).
    // Other processes may hold the write lock briefly: wait rather than fail.
    connection.busy_timeout(std::time::Duration::from_secs(5)).map_err(unavailable)?;
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}

pub(super) fn unavailable(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `PRAGMA synchronous` answers 2 for FULL (0 OFF, 1 NORMAL, 3 EXTRA).
    const FULL: i64 = 2;

    #[tokio::test]
    async fn the_writer_syncs_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let threads = Threads::open(&dir.path().join("store.db"), |connection| {
            connection.execute_batch("CREATE TABLE t (x INTEGER);")
        })
        .unwrap();

        let (mode, synchronous) = threads
            .write(
                |_| false,
                |connection| {
                    let pragma =
                        |name| connection.pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0));
                    Ok((pragma("journal_mode").map_err(unavailable)?, pragma("synchronous").map_err(unavailable)?))
                },
            )
            .await
            .unwrap();

        assert_eq!(mode, rusqlite::types::Value::Text("wal".into()));
        assert_eq!(synchronous, rusqlite::types::Value::Integer(FULL), "the writer must sync the WAL at each commit");
    }
}
