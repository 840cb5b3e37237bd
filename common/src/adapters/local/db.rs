use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Notify;

use super::cache::StoreCache;

/// How a port's error reports a failure of the database itself.
pub(crate) trait DbFailure {
    fn db_failure(message: String) -> Self;
}

impl DbFailure for crate::store::StoreError {
    fn db_failure(message: String) -> Self {
        Self::Backend(message)
    }
}

impl DbFailure for crate::queue::QueueError {
    fn db_failure(message: String) -> Self {
        Self::Backend(message)
    }
}

/// One SQLite database shared by the local `Store` and `Queue`s. Calls run on the blocking pool; the
/// database is in WAL mode so that a killed process loses nothing it had committed, and so that reads
/// on the reader connections never wait for the writer.
#[derive(Clone)]
pub struct LocalDb {
    conn: Arc<Mutex<Connection>>,
    readers: Arc<[Mutex<Connection>]>,
    next_reader: Arc<AtomicUsize>,
    /// Set once this process owns the database (see [`LocalDb::cache_reads`]).
    cache: Arc<OnceLock<StoreCache>>,
    wakeups: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
}

/// Read-only connections beside the writer: one per thread that may read at once.
fn reader_count() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get()).max(2)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS items (
    pk TEXT NOT NULL,
    sk TEXT NOT NULL,
    attrs TEXT NOT NULL,
    gsi1pk TEXT,
    gsi1sk TEXT,
    expires_at INTEGER,
    PRIMARY KEY (pk, sk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_gsi1 ON items (gsi1pk, gsi1sk, pk, sk) WHERE gsi1pk IS NOT NULL;
CREATE INDEX IF NOT EXISTS items_expiry ON items (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    visible_at INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, visible_at, seq);
";

/// Plans each statement once, whatever values are bound to it. Without this, SQLite plans range
/// conditions and limits with the values bound, and marks such a statement to be prepared again whenever
/// its bindings are cleared, which the statement cache does after every use: every cached query would
/// be parsed and planned anew each time.
fn plan_once(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

impl LocalDb {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, rusqlite::Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        plan_once(&conn)?;
        conn.execute_batch(SCHEMA)?;
        let readers = (0..reader_count())
            .map(|_| {
                let reader = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                reader.pragma_update(None, "busy_timeout", 5000)?;
                plan_once(&reader)?;
                Ok(Mutex::new(reader))
            })
            .collect::<Result<Vec<_>, rusqlite::Error>>()?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            readers: readers.into(),
            next_reader: Arc::default(),
            cache: Arc::default(),
            wakeups: Arc::default(),
        })
    }

    /// Keeps recently read items in memory from now on, in every handle on this database. Only for a
    /// process that owns the database (the local server locks its data dir): a write by another process
    /// would leave the cache stale.
    pub fn cache_reads(&self) {
        self.cache.get_or_init(StoreCache::new);
    }

    pub(crate) fn read_cache(&self) -> Option<&StoreCache> {
        self.cache.get()
    }

    /// Runs the read-only `f` on a reader connection, on the calling thread: reads are point lookups and
    /// bounded pages from the page cache, which take microseconds, and WAL readers never wait for the
    /// writer, so handing them to the blocking pool would cost more (two thread switches) than the read.
    /// Each sees every write committed before it starts.
    pub(crate) async fn read<T, E>(&self, f: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E>
    where
        E: DbFailure,
    {
        let first = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let readers = &self.readers;
        // The first free reader, else wait for the one this call was dealt.
        let free = (0..readers.len()).find_map(|i| readers[(first + i) % readers.len()].try_lock().ok());
        let guard = match free {
            Some(guard) => guard,
            None => readers[first % readers.len()]
                .lock()
                .map_err(|_| E::db_failure("a database lock is poisoned".to_owned()))?,
        };
        f(&guard)
    }

    /// Runs `f` with the connection on the blocking pool.
    pub(crate) async fn call<T, E>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: DbFailure + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| E::db_failure("the database lock is poisoned".to_owned()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| E::db_failure(format!("database task failed: {e}")))?
    }

    /// A wake-up shared by every handle on the queue `name`, so that long polls return as soon as a
    /// message is sent in this process.
    pub(crate) fn wakeup(&self, name: &str) -> Arc<Notify> {
        let mut wakeups = self.wakeups.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        wakeups.entry(name.to_owned()).or_default().clone()
    }
}
