//! An in-process store for unit tests.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::{ArchiveStore, GetResult, ObjectKey, ObjectMeta, PutMode, clamp_range};

/// Objects in a map, shared between clones. Nothing is persisted.
///
/// Faults can be injected for tests of what callers do on failure ([`MemoryStore::inject`]):
/// the next matching operations fail, before or after doing their work.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    objects: Arc<Mutex<BTreeMap<ObjectKey, Bytes>>>,
    faults: Arc<Mutex<Vec<Fault>>>,
}

/// An operation of a store, for [`Fault::op`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// `put`.
    Put,
    /// `get`.
    Get,
    /// `head`.
    Head,
    /// `list`.
    List,
    /// `delete`.
    Delete,
}

/// The error an injected fault answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultError {
    /// A retryable failure, as a `503` or a connection reset.
    Transient,
    /// An attempt that timed out.
    Timeout,
    /// The device is full.
    StorageFull,
    /// Permission denied.
    PermissionDenied,
}

/// A fault for the next `times` operations `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Which operation fails.
    pub op: FaultOp,
    /// How many of them, one after the other.
    pub times: u32,
    /// With what.
    pub error: FaultError,
    /// The operation is done first, and then fails: the caller cannot know it happened.
    pub after: bool,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `fault.times` operations `fault.op` fail. Faults queue up in order.
    pub fn inject(&self, fault: Fault) {
        self.faults_guard().push(fault);
    }

    /// The faults not yet spent.
    pub fn faults_left(&self) -> u32 {
        self.faults_guard().iter().map(|f| f.times).sum()
    }

    fn faults_guard(&self) -> MutexGuard<'_, Vec<Fault>> {
        self.faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Spends the first fault for `op`, if any: whether it strikes after the operation, and
    /// its error.
    fn take_fault(&self, op: FaultOp, key: &str) -> Option<(bool, Error)> {
        let mut faults = self.faults_guard();
        let at = faults.iter().position(|f| f.op == op && f.times > 0)?;
        let fault = faults[at];
        faults[at].times -= 1;
        if faults[at].times == 0 {
            faults.remove(at);
        }
        let key = key.to_owned();
        let name = match op {
            FaultOp::Put => "put",
            FaultOp::Get => "get",
            FaultOp::Head => "head",
            FaultOp::List => "list",
            FaultOp::Delete => "delete",
        };
        let error = match fault.error {
            FaultError::Transient => Error::Transient {
                op: name,
                key,
                message: "injected fault".into(),
            },
            FaultError::Timeout => Error::Timeout {
                op: name,
                key,
                after: std::time::Duration::ZERO,
            },
            FaultError::StorageFull => Error::StorageFull {
                key,
                source: std::io::Error::from(std::io::ErrorKind::StorageFull),
            },
            FaultError::PermissionDenied => Error::PermissionDenied {
                key,
                message: "injected fault".into(),
            },
        };
        Some((fault.after, error))
    }

    /// Runs `work` under the faults for `op`: one striking before returns at once, one
    /// striking after replaces the result.
    fn faulty<T>(&self, op: FaultOp, key: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
        match self.take_fault(op, key) {
            None => work(),
            Some((false, error)) => Err(error),
            Some((true, error)) => {
                let _ = work();
                Err(error)
            }
        }
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
        self.faulty(FaultOp::Put, key.as_str(), || {
            let mut objects = self.objects();
            if mode == PutMode::Create && objects.contains_key(key) {
                return Err(Error::AlreadyExists {
                    key: key.to_string(),
                });
            }
            objects.insert(key.clone(), body);
            Ok(())
        })
    }

    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
        cancel: &CancellationToken,
    ) -> Result<GetResult> {
        check(cancel)?;
        let body = self.faulty(FaultOp::Get, key.as_str(), || {
            self.objects()
                .get(key)
                .cloned()
                .ok_or_else(|| Error::NotFound {
                    key: key.to_string(),
                })
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
        let size = self.faulty(FaultOp::Head, key.as_str(), || {
            self.objects()
                .get(key)
                .map(|b| b.len() as u64)
                .ok_or_else(|| Error::NotFound {
                    key: key.to_string(),
                })
        })?;
        Ok(ObjectMeta {
            key: key.clone(),
            size,
        })
    }

    async fn list(&self, prefix: &str, cancel: &CancellationToken) -> Result<Vec<ObjectMeta>> {
        check(cancel)?;
        self.faulty(FaultOp::List, prefix, || {
            Ok(self
                .objects()
                .iter()
                .filter(|(k, _)| k.as_str().starts_with(prefix))
                .map(|(k, v)| ObjectMeta {
                    key: k.clone(),
                    size: v.len() as u64,
                })
                .collect())
        })
    }

    async fn delete(&self, key: &ObjectKey, cancel: &CancellationToken) -> Result<()> {
        check(cancel)?;
        self.faulty(FaultOp::Delete, key.as_str(), || {
            self.objects().remove(key);
            Ok(())
        })
    }
}
