//! Per-key reader/writer locks inside one stock process. TCC calls take the keys they touch
//! shared, so they run side by side; loading a key into Redis, repair, the consistency check
//! and `PUT` take it exclusively, so they never see or overwrite a reservation that is
//! half-way between Redis and the database.

use std::hash::{DefaultHasher, Hash, Hasher};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

const STRIPES: usize = 1024;

pub struct KeyLocks {
    stripes: Vec<std::sync::Arc<RwLock<()>>>,
}

impl Default for KeyLocks {
    fn default() -> Self {
        KeyLocks {
            stripes: (0..STRIPES)
                .map(|_| std::sync::Arc::new(RwLock::new(())))
                .collect(),
        }
    }
}

impl KeyLocks {
    fn stripe(key: &str) -> usize {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() as usize) % STRIPES
    }

    /// Shared locks on every key, taken in stripe order so no two callers wait on each other
    /// in a cycle.
    pub async fn shared<'a>(
        &self,
        keys: impl Iterator<Item = &'a str>,
    ) -> Vec<OwnedRwLockReadGuard<()>> {
        let mut idx: Vec<usize> = keys.map(Self::stripe).collect();
        idx.sort_unstable();
        idx.dedup();
        let mut guards = Vec::with_capacity(idx.len());
        for i in idx {
            guards.push(self.stripes[i].clone().read_owned().await);
        }
        guards
    }

    /// The exclusive lock of one key.
    pub async fn exclusive(&self, key: &str) -> OwnedRwLockWriteGuard<()> {
        self.stripes[Self::stripe(key)].clone().write_owned().await
    }
}
