//! Streaming `BASE_BACKUP` (PostgreSQL 15 and later).
//!
//! Wire format: see [`BaseBackup`].

use std::collections::VecDeque;

use bytes::{Buf as _, Bytes};
use postgres_protocol::message::backend::Message;
use walferry_wal::{Lsn, TimelineId};

use crate::client::{ReplicationClient, ResultSets, Row, parse_lsn, parse_timeline};
use crate::conn::Conn;
use crate::{Error, Result};

/// Settings for [`ReplicationClient::base_backup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackupOptions {
    /// `LABEL`: written into `backup_label` and the backup history file. Must not contain
    /// NUL.
    pub label: String,
    /// `PROGRESS`: the server first sums the size of every tablespace (an extra pass over the
    /// data directory) so that [`TablespaceInfo::size_kib`] is known.
    pub progress: bool,
    /// `CHECKPOINT 'fast'` (true) or `'spread'` (false): how fast the backup-start checkpoint
    /// runs.
    pub fast_checkpoint: bool,
    /// `WAIT`: when true (PostgreSQL's default), the server ends the backup only once the last
    /// WAL segment it needs is archived (with `archive_mode` on). With false, the caller must
    /// check that itself before relying on the backup.
    pub wait_for_archive: bool,
    /// `MANIFEST 'yes'`: send a backup manifest after the archives
    /// ([`BackupEvent::ManifestStart`]).
    pub manifest: bool,
    /// `TABLESPACE_MAP`: put a `tablespace_map` file into the main archive instead of the
    /// symbolic links under `pg_tblspc` (as `pg_basebackup -Ft` does).
    pub tablespace_map: bool,
    /// `VERIFY_CHECKSUMS`: verify data-page checksums while reading, when the cluster has
    /// them (PostgreSQL's default: true).
    pub verify_checksums: bool,
    /// `MAX_RATE` in kilobytes per second (32 to 1048576), or `None` for no limit.
    pub max_rate_kbps: Option<u32>,
}

impl Default for BaseBackupOptions {
    /// Label `walferry`, fast checkpoint, wait for archiving, tablespace map, checksums
    /// verified, no progress estimate, no manifest, no rate limit.
    fn default() -> Self {
        BaseBackupOptions {
            label: "walferry".to_owned(),
            progress: false,
            fast_checkpoint: true,
            wait_for_archive: true,
            manifest: false,
            tablespace_map: true,
            verify_checksums: true,
            max_rate_kbps: None,
        }
    }
}

impl BaseBackupOptions {
    /// The command text, in the option-list syntax of PostgreSQL 15.
    pub(crate) fn command(&self) -> Result<String> {
        if self.label.contains('\0') {
            return Err(Error::Config {
                setting: "label".to_owned(),
                reason: "the backup label contains a NUL character".to_owned(),
            });
        }
        if let Some(rate) = self.max_rate_kbps
            && !(32..=1_048_576).contains(&rate)
        {
            return Err(Error::Config {
                setting: "max_rate_kbps".to_owned(),
                reason: format!("{rate} is outside 32 to 1048576 kilobytes per second"),
            });
        }
        let flag = |on: bool| if on { 1 } else { 0 };
        // The replication scanner reads '' as a quote inside a string and has no backslash
        // escapes (repl_scanner.l).
        let mut options = vec![format!("LABEL '{}'", self.label.replace('\'', "''"))];
        if self.progress {
            options.push("PROGRESS".to_owned());
        }
        options.push(format!(
            "CHECKPOINT '{}'",
            if self.fast_checkpoint {
                "fast"
            } else {
                "spread"
            }
        ));
        options.push(format!("WAIT {}", flag(self.wait_for_archive)));
        options.push(format!(
            "MANIFEST '{}'",
            if self.manifest { "yes" } else { "no" }
        ));
        options.push(format!("TABLESPACE_MAP {}", flag(self.tablespace_map)));
        options.push(format!("VERIFY_CHECKSUMS {}", flag(self.verify_checksums)));
        if let Some(rate) = self.max_rate_kbps {
            options.push(format!("MAX_RATE {rate}"));
        }
        Ok(format!("BASE_BACKUP ( {} )", options.join(", ")))
    }
}

/// A tablespace in the backup, from the list the server sends before the archives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablespaceInfo {
    /// The tablespace's OID, `None` for the main data directory.
    pub oid: Option<u32>,
    /// The tablespace directory on the server, `None` for the main data directory.
    pub location: Option<String>,
    /// The server's estimate of its size in KiB, known only with
    /// [`BaseBackupOptions::progress`].
    pub size_kib: Option<u64>,
}

/// One step of a base backup, in the order the server sends them.
///
/// The stream is: [`Started`](BackupEvent::Started), [`Tablespaces`](BackupEvent::Tablespaces),
/// then for each archive an [`ArchiveStart`](BackupEvent::ArchiveStart) followed by its
/// [`Data`](BackupEvent::Data) chunks, then optionally [`ManifestStart`](BackupEvent::ManifestStart)
/// and [`ManifestData`](BackupEvent::ManifestData) chunks, and last
/// [`Finished`](BackupEvent::Finished). [`Progress`](BackupEvent::Progress) may come between
/// any of the chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackupEvent {
    /// The backup-start checkpoint is done; WAL from `start_lsn` is needed to restore.
    Started {
        /// The backup's start LSN (the checkpoint's redo location).
        start_lsn: Lsn,
        /// The timeline at the start.
        timeline: TimelineId,
    },
    /// The tablespaces to be sent, each as one archive; the main data directory last.
    Tablespaces(Vec<TablespaceInfo>),
    /// A new tar archive begins; the previous one, if any, is complete.
    ArchiveStart {
        /// The archive's name: `base.tar` for the main data directory, `<oid>.tar` for a
        /// tablespace.
        name: String,
        /// The tablespace directory on the server; `None` for the main data directory.
        tablespace_location: Option<String>,
    },
    /// The next chunk of the current tar archive.
    Data(Bytes),
    /// Bytes of archive data the server has sent so far (all archives together).
    Progress {
        /// The running total.
        bytes_done: u64,
    },
    /// The backup manifest begins; the last archive is complete.
    ManifestStart,
    /// The next chunk of the backup manifest (JSON).
    ManifestData(Bytes),
    /// The backup is complete: the stream is over and WAL up to `end_lsn` makes it
    /// consistent.
    Finished {
        /// The backup's end LSN.
        end_lsn: Lsn,
        /// The timeline at the end.
        timeline: TimelineId,
    },
}

/// Where the COPY stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the first `n`.
    BeforeArchive,
    InArchive,
    InManifest,
    /// After `Finished` or an error.
    Done,
}

/// A base backup in progress; read it with [`BaseBackup::next_event`] until `None`.
///
/// Dropping it before the end leaves the client unusable (the server is still sending).
///
/// # The wire format
///
/// From `basebackup_copy.c` (the "copystream" sink) and the protocol-replication docs. After
/// the client sends `BASE_BACKUP ( ... )` the server:
///
/// 1. does the backup-start checkpoint, then sends a result set of one row: `recptr` (text,
///    `X/X`, the start LSN) and `tli` (int8, its timeline);
/// 2. sends a result set with one row per tablespace: `spcoid` (oid), `spclocation` (text),
///    `size` (int8, **kilobytes**, only with `PROGRESS`, else NULL). The main data directory
///    is the row whose oid and location are NULL; it comes last;
/// 3. sends `CopyOutResponse` and a single COPY stream in which each `CopyData` payload starts
///    with a type byte:
///    - `n`: a new archive begins; two NUL-terminated strings follow, the archive name
///      (`base.tar`, `<oid>.tar`) and the tablespace location (empty for the main directory);
///    - `d`: the rest of the payload is the next chunk of the current archive, or of the
///      manifest once `m` was sent;
///    - `p`: progress; an 8-byte big-endian count of bytes sent so far (sent at most about once
///      a second, and at the end of each archive);
///    - `m`: the backup manifest begins (no payload);
/// 4. ends the stream with `CopyDone`, then sends a result set with the end LSN and timeline
///    (same columns as step 1), `CommandComplete` and `ReadyForQuery`.
///
/// Archives end implicitly, where the next `n`, the `m` or `CopyDone` arrives. Each archive
/// is a complete tar stream, including its two zero end-of-archive blocks.
///
/// # Memory
///
/// [`BaseBackup::next_event`] yields each chunk as a [`Bytes`] slice of the connection's read
/// buffer (about 32 KiB per chunk, the server's `SINK_BUFFER_LENGTH`), without copying. The
/// client holds at most one 256 KiB read buffer; memory stays bounded as long as the caller
/// does not keep chunks (a kept chunk keeps its whole 256 KiB buffer alive).
#[derive(Debug)]
pub struct BaseBackup<'a> {
    client: &'a mut ReplicationClient,
    start_lsn: Lsn,
    timeline: TimelineId,
    tablespaces: Vec<TablespaceInfo>,
    queued: VecDeque<BackupEvent>,
    phase: Phase,
}

impl<'a> BaseBackup<'a> {
    /// Reads the start position and the tablespace list, up to `CopyOutResponse`.
    pub(crate) async fn start(client: &'a mut ReplicationClient) -> Result<BaseBackup<'a>> {
        let conn = client.conn();
        let mut sets = ResultSets::default();
        loop {
            match conn.read_message().await? {
                Message::CopyOutResponse(_) => break,
                Message::ErrorResponse(body) => {
                    let error = conn.server_error(body.fields());
                    conn.drain_until_ready().await?;
                    client.command_done();
                    return Err(error);
                }
                other => {
                    if let Some(other) = sets.handle(conn, other)? {
                        return Err(conn.unexpected("before the base backup stream", &other));
                    }
                }
            }
        }
        let sets = sets.finish();
        let [start, tablespaces] = sets.as_slice() else {
            return Err(conn.protocol_err(format!(
                "expected 2 result sets before the base backup stream, got {}",
                sets.len()
            )));
        };
        let (start_lsn, timeline) = position(conn, start, "start")?;
        let tablespaces = tablespaces
            .iter()
            .map(|row| tablespace(conn, row))
            .collect::<Result<Vec<_>>>()?;
        Ok(BaseBackup {
            client,
            start_lsn,
            timeline,
            queued: VecDeque::from([
                BackupEvent::Started {
                    start_lsn,
                    timeline,
                },
                BackupEvent::Tablespaces(tablespaces.clone()),
            ]),
            tablespaces,
            phase: Phase::BeforeArchive,
        })
    }

    /// The backup's start LSN (also sent as [`BackupEvent::Started`]).
    pub fn start_lsn(&self) -> Lsn {
        self.start_lsn
    }

    /// The timeline at the start.
    pub fn timeline(&self) -> TimelineId {
        self.timeline
    }

    /// The tablespaces (also sent as [`BackupEvent::Tablespaces`]).
    pub fn tablespaces(&self) -> &[TablespaceInfo] {
        &self.tablespaces
    }

    /// The next event, or `None` after [`BackupEvent::Finished`].
    ///
    /// An error from the server (for example a full WAL archive wait cancelled, or a file it
    /// could not read) ends the stream: it is returned once and `None` follows. A connection
    /// error leaves the client unusable.
    pub async fn next_event(&mut self) -> Result<Option<BackupEvent>> {
        if let Some(event) = self.queued.pop_front() {
            return Ok(Some(event));
        }
        if self.phase == Phase::Done {
            return Ok(None);
        }
        let result = self.read_event().await;
        if result.is_err() {
            self.phase = Phase::Done;
        }
        result.map(Some)
    }

    async fn read_event(&mut self) -> Result<BackupEvent> {
        let conn = self.client.conn();
        let payload = match conn.read_message().await? {
            Message::CopyData(body) => body.into_bytes(),
            Message::CopyDone => return self.finish().await,
            Message::ErrorResponse(body) => {
                let error = conn.server_error(body.fields());
                conn.drain_until_ready().await?;
                self.client.command_done();
                return Err(error);
            }
            other => return Err(conn.unexpected("in the base backup stream", &other)),
        };
        let Some(&kind) = payload.first() else {
            return Err(conn.protocol_err("empty CopyData message".to_owned()));
        };
        let mut body = payload.slice(1..);
        match (kind, self.phase) {
            (b'd', Phase::InArchive) => Ok(BackupEvent::Data(body)),
            (b'd', Phase::InManifest) => Ok(BackupEvent::ManifestData(body)),
            (b'd', _) => Err(conn.protocol_err("archive data before any archive".to_owned())),
            (b'n', Phase::BeforeArchive | Phase::InArchive) => {
                let name = take_cstr(conn, &mut body)?;
                let location = take_cstr(conn, &mut body)?;
                self.phase = Phase::InArchive;
                Ok(BackupEvent::ArchiveStart {
                    name,
                    tablespace_location: (!location.is_empty()).then_some(location),
                })
            }
            (b'm', Phase::BeforeArchive | Phase::InArchive) => {
                self.phase = Phase::InManifest;
                Ok(BackupEvent::ManifestStart)
            }
            (b'p', _) => {
                if body.len() != 8 {
                    return Err(conn.protocol_err(format!(
                        "progress message of {} bytes, expected 8",
                        body.len()
                    )));
                }
                Ok(BackupEvent::Progress {
                    bytes_done: body.get_u64(),
                })
            }
            (kind, phase) => Err(conn.protocol_err(format!(
                "unexpected base backup message type '{}' ({phase:?})",
                kind.escape_ascii()
            ))),
        }
    }

    /// After `CopyDone`: the end position, then the command's completion.
    async fn finish(&mut self) -> Result<BackupEvent> {
        let conn = self.client.conn();
        let mut sets = ResultSets::default();
        let mut error = None;
        loop {
            match conn.read_message().await? {
                Message::ReadyForQuery(_) => break,
                Message::ErrorResponse(body) => error = Some(conn.server_error(body.fields())),
                other => {
                    if let Some(other) = sets.handle(conn, other)? {
                        return Err(conn.unexpected("after the base backup stream", &other));
                    }
                }
            }
        }
        if let Some(error) = error {
            self.client.command_done();
            return Err(error);
        }
        let sets = sets.finish();
        let Some(end) = sets.first() else {
            return Err(conn.protocol_err("no end position after the base backup".to_owned()));
        };
        let (end_lsn, timeline) = position(conn, end, "end")?;
        self.client.command_done();
        self.phase = Phase::Done;
        Ok(BackupEvent::Finished { end_lsn, timeline })
    }
}

/// The `(recptr, tli)` of a start or end result set.
fn position(conn: &Conn, rows: &[Row], which: &str) -> Result<(Lsn, TimelineId)> {
    let [row] = rows else {
        return Err(conn.protocol_err(format!(
            "expected one row with the backup {which} position, got {}",
            rows.len()
        )));
    };
    let (Some(lsn), Some(tli)) = (row.get(0), row.get(1)) else {
        return Err(conn.protocol_err(format!("backup {which} position has NULL fields")));
    };
    Ok((parse_lsn(conn, lsn)?, parse_timeline(conn, tli)?))
}

fn tablespace(conn: &Conn, row: &Row) -> Result<TablespaceInfo> {
    let oid = row
        .get(0)
        .map(|oid| {
            oid.parse()
                .map_err(|_| conn.protocol_err(format!("invalid tablespace oid '{oid}'")))
        })
        .transpose()?;
    let size_kib = row
        .get(2)
        .map(|size| {
            size.parse()
                .map_err(|_| conn.protocol_err(format!("invalid tablespace size '{size}'")))
        })
        .transpose()?;
    Ok(TablespaceInfo {
        oid,
        location: row.get(1).map(str::to_owned),
        size_kib,
    })
}

/// Takes a NUL-terminated string off the front of `body`.
fn take_cstr(conn: &Conn, body: &mut Bytes) -> Result<String> {
    let end = body.iter().position(|&b| b == 0).ok_or_else(|| {
        conn.protocol_err("unterminated string in new-archive message".to_owned())
    })?;
    let text = String::from_utf8(body[..end].to_vec())
        .map_err(|_| conn.protocol_err("new-archive message is not valid UTF-8".to_owned()))?;
    body.advance(end + 1);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_text() {
        let opts = BaseBackupOptions {
            label: "it's".to_owned(),
            ..BaseBackupOptions::default()
        };
        assert_eq!(
            opts.command().expect("command"),
            "BASE_BACKUP ( LABEL 'it''s', CHECKPOINT 'fast', WAIT 1, MANIFEST 'no', \
             TABLESPACE_MAP 1, VERIFY_CHECKSUMS 1 )"
        );
        let opts = BaseBackupOptions {
            progress: true,
            fast_checkpoint: false,
            wait_for_archive: false,
            manifest: true,
            tablespace_map: false,
            verify_checksums: false,
            max_rate_kbps: Some(1024),
            ..BaseBackupOptions::default()
        };
        assert_eq!(
            opts.command().expect("command"),
            "BASE_BACKUP ( LABEL 'walferry', PROGRESS, CHECKPOINT 'spread', WAIT 0, \
             MANIFEST 'yes', TABLESPACE_MAP 0, VERIFY_CHECKSUMS 0, MAX_RATE 1024 )"
        );
    }

    #[test]
    fn command_rejects_bad_options() {
        for opts in [
            BaseBackupOptions {
                label: "a\0b".to_owned(),
                ..BaseBackupOptions::default()
            },
            BaseBackupOptions {
                max_rate_kbps: Some(31),
                ..BaseBackupOptions::default()
            },
        ] {
            assert!(opts.command().expect_err("invalid").is_config());
        }
    }
}
