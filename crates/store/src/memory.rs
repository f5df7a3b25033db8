//! An in-process store for unit tests.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::{ArchiveStore, GetResult, ObjectKey, ObjectMeta, PutMode, clamp_range};

/// Objects in a map, shared between clones. Nothing is persisted.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    objects: Arc<Mutex<BTreeMap<ObjectKey, Bytes>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn objects(&self) -> MutexGuard<'_, BTreeMap<ObjectKey, Bytes>> {
        // A panic while holding the lock cannot leave the map half-updated: every critical
        // section is a single map operation.
        self.objects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn check(cancel: &CancellationToken) -> Result<()> {
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    Ok(())
}

impl ArchiveStore for MemoryStore {
    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        mode: PutMode,
        cancel: &CancellationToken,
    ) -> Result<()> {
        check(cancel)?;
        let mut objects = self.objects();
        if mode == PutMode::Create && objects.contains_key(key) {
            return Err(Error::AlreadyExists {
                key: key.to_string(),
            });
        }
        objects.insert(key.clone(), body);
        Ok(())
    }

    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
        cancel: &CancellationToken,
    ) -> Result<GetResult> {
        check(cancel)?;
        let body = self
            .objects()
            .get(key)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                key: key.to_string(),
            })?;
        let object_size = body.len() as u64;
        let body = match range {
            None => body,
            Some(range) => {
                let r = clamp_range(key, range, object_size)?;
                // Both ends are clamped to the length of an in-memory buffer, so they fit.
                let start = usize::try_from(r.start).expect("clamped to a buffer length");
                let end = usize::try_from(r.end).expect("clamped to a buffer length");
                body.slice(start..end)
            }
        };
        Ok(GetResult { body, object_size })
    }

    async fn head(&self, key: &ObjectKey, cancel: &CancellationToken) -> Result<ObjectMeta> {
        check(cancel)?;
        let size = self
            .objects()
            .get(key)
            .map(|b| b.len() as u64)
            .ok_or_else(|| Error::NotFound {
                key: key.to_string(),
            })?;
        Ok(ObjectMeta {
            key: key.clone(),
            size,
        })
    }

    async fn list(&self, prefix: &str, cancel: &CancellationToken) -> Result<Vec<ObjectMeta>> {
        check(cancel)?;
        Ok(self
            .objects()
            .iter()
            .filter(|(k, _)| k.as_str().starts_with(prefix))
            .map(|(k, v)| ObjectMeta {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    async fn delete(&self, key: &ObjectKey, cancel: &CancellationToken) -> Result<()> {
        check(cancel)?;
        self.objects().remove(key);
        Ok(())
    }
}
