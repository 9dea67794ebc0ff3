//! The in-memory engine: a `BTreeMap` behind a mutex, with undo-on-error transactions.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::kv::{KvEngine, KvRead, KvWrite, Table};
use super::{KvStore, StoreError};

type Key = (Table, Vec<u8>);

/// Tables kept in memory. Writers are serialised by the mutex, like LMDB's single writer.
#[derive(Default, Debug)]
pub struct MemEngine {
    map: Mutex<BTreeMap<Key, Vec<u8>>>,
}

/// The block store over memory.
pub type MemStore = KvStore<MemEngine>;

struct MemTxn<'a> {
    map: &'a mut BTreeMap<Key, Vec<u8>>,
    /// Previous values, to restore if the transaction fails.
    undo: Vec<(Key, Option<Vec<u8>>)>,
}

struct MemRead<'a>(&'a BTreeMap<Key, Vec<u8>>);

impl KvRead for MemRead<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(&(table, key.to_vec())).cloned())
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        for ((t, k), v) in self.0.range((table, prefix.to_vec())..) {
            if *t != table || !k.starts_with(prefix) || !visit(k, v) {
                break;
            }
        }
        Ok(())
    }
}

impl KvRead for MemTxn<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        MemRead(self.map).get(table, key)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        MemRead(self.map).scan(table, prefix, visit)
    }
}

impl KvWrite for MemTxn<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let key = (table, key.to_vec());
        let old = self.map.insert(key.clone(), value.to_vec());
        self.undo.push((key, old));
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
        let key = (table, key.to_vec());
        let old = self.map.remove(&key);
        let existed = old.is_some();
        self.undo.push((key, old));
        Ok(existed)
    }
}

impl KvEngine for MemEngine {
    fn read<T>(&self, f: impl FnOnce(&dyn KvRead) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let map = self.map.lock().expect("memory store lock poisoned");
        f(&MemRead(&map))
    }

    fn write<T>(&self, f: impl FnOnce(&mut dyn KvWrite) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut map = self.map.lock().expect("memory store lock poisoned");
        let mut txn = MemTxn { map: &mut map, undo: Vec::new() };
        let result = f(&mut txn);
        if result.is_err() {
            let MemTxn { map, undo } = txn;
            for (key, old) in undo.into_iter().rev() {
                match old {
                    Some(value) => map.insert(key, value),
                    None => map.remove(&key),
                };
            }
        }
        result
    }
}
