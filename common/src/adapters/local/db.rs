use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Notify;

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
/// database is in WAL mode so that a killed process loses nothing it had committed.
#[derive(Clone)]
pub struct LocalDb {
    conn: Arc<Mutex<Connection>>,
    wakeups: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
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
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            wakeups: Arc::default(),
        })
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
