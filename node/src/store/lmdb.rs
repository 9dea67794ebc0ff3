//! The LMDB engine (production): one environment, one named database per [`Table`].
//!
//! Every write transaction is synced to disk when it commits (LMDB's default durability), so a
//! block, leaf or manifest the store reports written survives `kill -9` and power loss.

use std::path::Path;

use heed::types::Bytes as Raw;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, RoTxn, RwTxn};

use super::kv::{KvEngine, KvRead, KvWrite, Table};
use super::{KvStore, StoreError};
use crate::runtime::Compute;

/// The block store over LMDB.
pub type LmdbStore = KvStore<LmdbEngine>;

type Db = Database<'static, Raw, Raw>;

/// An open LMDB environment with the store's tables.
pub struct LmdbEngine {
    env: Env,
    dbs: [Db; Table::ALL.len()],
}

impl From<heed::Error> for StoreError {
    fn from(e: heed::Error) -> StoreError {
        StoreError::Backend(e.to_string())
    }
}

/// Virtual address space reserved for the database file; the file itself grows only as data
/// is written. Sized well above the quota so bookkeeping pages never hit the limit first.
fn map_size_bytes(quota_max_bytes: u64) -> usize {
    const GIB: u64 = 1 << 30;
    let wanted = quota_max_bytes.saturating_mul(2).saturating_add(4 * GIB);
    usize::try_from(wanted.next_multiple_of(1 << 20)).unwrap_or(usize::MAX & !0xfffff)
}

impl LmdbEngine {
    /// Opens (creating if needed) the database in directory `path`.
    pub fn open(path: &Path, quota_max_bytes: u64) -> Result<LmdbEngine, StoreError> {
        std::fs::create_dir_all(path)
            .map_err(|e| StoreError::Backend(format!("creating {}: {e}", path.display())))?;
        // SAFETY: heed requires that the same file is not opened twice in one process with
        // different options; the node opens its data directory exactly once.
        let env = unsafe {
            EnvOpenOptions::new()
                .map_size(map_size_bytes(quota_max_bytes))
                .max_dbs(Table::ALL.len() as u32)
                .open(path)?
        };
        let wtxn = env.write_txn()?;
        let dbs = env
            .create_databases_and_commit(wtxn, |opener, wtxn| -> Result<_, heed::Error> {
                let mut dbs = Vec::with_capacity(Table::ALL.len());
                for table in Table::ALL {
                    dbs.push(opener.create_database::<Raw, Raw>(wtxn, Some(table.name()))?);
                }
                let dbs: [_; Table::ALL.len()] =
                    dbs.try_into().unwrap_or_else(|_| unreachable!("one per table"));
                Ok(CommitOrAbort::<_, ()>::Commit(dbs))
            })?
            .unwrap_commit();
        Ok(LmdbEngine { env, dbs })
    }

    fn db(&self, table: Table) -> &Db {
        &self.dbs[table as usize]
    }
}

impl LmdbStore {
    /// Opens the store in `path`, running its blocking calls on the blocking pool.
    pub fn open(path: &Path, quota_max_bytes: u64) -> Result<LmdbStore, StoreError> {
        Ok(KvStore::new(LmdbEngine::open(path, quota_max_bytes)?, quota_max_bytes, Compute::Pool))
    }
}

struct LmdbRead<'a, 't> {
    engine: &'a LmdbEngine,
    txn: &'a RoTxn<'t>,
}

struct LmdbWrite<'a, 't> {
    engine: &'a LmdbEngine,
    txn: &'a mut RwTxn<'t>,
}

impl KvRead for LmdbRead<'_, '_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.engine.db(table).get(self.txn, key)?.map(<[u8]>::to_vec))
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let db = self.engine.db(table);
        // LMDB refuses an empty key, so an empty prefix means a plain iteration.
        type Entries<'t> = Box<dyn Iterator<Item = heed::Result<(&'t [u8], &'t [u8])>> + 't>;
        let entries: Entries<'_> = if prefix.is_empty() {
            Box::new(db.iter(self.txn)?)
        } else {
            Box::new(db.prefix_iter(self.txn, prefix)?)
        };
        for entry in entries {
            let (key, value) = entry?;
            if !visit(key, value) {
                break;
            }
        }
        Ok(())
    }
}

impl LmdbWrite<'_, '_> {
    /// Reads see the transaction's own writes.
    fn reader(&self) -> LmdbRead<'_, '_> {
        LmdbRead { engine: self.engine, txn: self.txn }
    }
}

impl KvRead for LmdbWrite<'_, '_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.reader().get(table, key)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.reader().scan(table, prefix, visit)
    }
}

impl KvWrite for LmdbWrite<'_, '_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        Ok(self.engine.db(table).put(self.txn, key, value)?)
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.engine.db(table).delete(self.txn, key)?)
    }
}

impl KvEngine for LmdbEngine {
    fn read<T>(&self, f: impl FnOnce(&dyn KvRead) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let txn = self.env.read_txn()?;
        f(&LmdbRead { engine: self, txn: &txn })
    }

    fn write<T>(&self, f: impl FnOnce(&mut dyn KvWrite) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut txn = self.env.write_txn()?;
        let result = f(&mut LmdbWrite { engine: self, txn: &mut txn })?;
        txn.commit()?;
        Ok(result)
    }
}
