//! The replication connection and its simple commands.

use std::sync::Arc;

use fallible_iterator::FallibleIterator as _;
use postgres_protocol::message::backend::{DataRowBody, Message, RowDescriptionBody};
use walferry_wal::{Lsn, PgVersion, TimelineId};

use crate::backup::{BaseBackup, BaseBackupOptions};
use crate::config::ConnectOptions;
use crate::conn::Conn;
use crate::{Error, Result};

/// A physical replication connection (`replication=true`) to one server.
///
/// Commands run one at a time; each takes `&mut self`. A [`BaseBackup`] borrows the client
/// until it is read to the end; a client whose backup was dropped half-way cannot run more
/// commands ([`Error::Unusable`]) and should be dropped.
#[derive(Debug)]
pub struct ReplicationClient {
    conn: Conn,
    /// Why the connection cannot take a command, when it cannot.
    unusable: Option<&'static str>,
}

/// What `IDENTIFY_SYSTEM` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// The database system identifier, as in `pg_control_system()`.
    pub system_identifier: u64,
    /// The server's current timeline.
    pub timeline: TimelineId,
    /// The current WAL flush location.
    pub xlogpos: Lsn,
    /// The database connected to; `None` for physical replication connections.
    pub dbname: Option<String>,
}

/// One row of a result set, every value in text form (`None` for SQL NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<Option<String>>,
}

impl Row {
    /// The value of column `index` (from 0); `None` when it is NULL or out of range.
    pub fn get(&self, index: usize) -> Option<&str> {
        self.values.get(index)?.as_deref()
    }

    /// The value of the first column called `name`; `None` when it is NULL or missing.
    pub fn get_by_name(&self, name: &str) -> Option<&str> {
        let index = self.columns.iter().position(|c| c == name)?;
        self.get(index)
    }

    /// The column names, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl ReplicationClient {
    /// Connects, starts a physical replication session (`replication=true`) and
    /// authenticates with whatever the server asks for among trust, `password` (cleartext),
    /// `md5` and `scram-sha-256`.
    ///
    /// The whole of it is bounded by [`ConnectOptions::connect_timeout`] when set. Fails with
    /// [`Error::Server`] when the server refuses (SQLSTATE `28P01` for a wrong password,
    /// `28000` when no `pg_hba.conf` line allows the connection).
    pub async fn connect(opts: &ConnectOptions) -> Result<Self> {
        let connect = async {
            let mut conn = Conn::open(opts).await?;
            conn.startup(opts).await?;
            Ok::<_, Error>(conn)
        };
        let conn = match opts.connect_timeout {
            Some(after) => {
                tokio::time::timeout(after, connect)
                    .await
                    .map_err(|_| Error::Timeout {
                        host: opts.host.to_string(),
                        port: opts.port,
                        after,
                    })??
            }
            None => connect.await?,
        };
        tracing::debug!(host = %conn.host, port = conn.port, version = ?conn.params.get("server_version"), "connected for replication");
        Ok(ReplicationClient {
            conn,
            unusable: None,
        })
    }

    /// The server's `server_version`, for example `15.10 (Debian 15.10-1.pgdg120+1)`; empty
    /// if the server did not report it.
    pub fn server_version(&self) -> &str {
        self.parameter("server_version").unwrap_or_default()
    }

    /// The server's major version number (`15` for `15.10`), from `server_version`.
    pub fn server_major_version(&self) -> Option<u32> {
        let version = self.server_version();
        let digits = version
            .find(|c: char| !c.is_ascii_digit())
            .map_or(version, |end| &version[..end]);
        digits.parse().ok()
    }

    /// The server's major version when walferry supports it.
    pub fn pg_version(&self) -> Option<PgVersion> {
        PgVersion::from_major(self.server_major_version()?)
    }

    /// A run-time parameter the server reported (`ParameterStatus`), such as
    /// `server_version`, `server_encoding` or `integer_datetimes`.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.conn.params.get(name).map(String::as_str)
    }

    /// The host name or socket directory this client is connected to.
    pub fn host(&self) -> &str {
        &self.conn.host
    }

    /// The port this client is connected to.
    pub fn port(&self) -> u16 {
        self.conn.port
    }

    /// Runs `IDENTIFY_SYSTEM`.
    pub async fn identify_system(&mut self) -> Result<SystemInfo> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows.first().ok_or_else(|| {
            self.conn
                .protocol_err("IDENTIFY_SYSTEM returned no row".to_owned())
        })?;
        let field = |name: &str| -> Result<&str> {
            row.get_by_name(name).ok_or_else(|| {
                self.conn
                    .protocol_err(format!("IDENTIFY_SYSTEM returned no '{name}'"))
            })
        };
        let systemid = field("systemid")?;
        let timeline = field("timeline")?;
        let xlogpos = field("xlogpos")?;
        Ok(SystemInfo {
            system_identifier: systemid.parse().map_err(|_| {
                self.conn
                    .protocol_err(format!("invalid system identifier '{systemid}'"))
            })?,
            timeline: parse_timeline(&self.conn, timeline)?,
            xlogpos: parse_lsn(&self.conn, xlogpos)?,
            dbname: row.get_by_name("dbname").map(str::to_owned),
        })
    }

    /// Runs one command with the simple query protocol and returns the rows of its result
    /// (empty for a command that returns none). On a replication connection the server
    /// accepts only replication commands and `SHOW`, for example `SHOW wal_segment_size`.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Row>> {
        self.begin_command()?;
        self.conn.send_query(sql).await?;
        let mut sets = ResultSets::default();
        let mut error = None;
        loop {
            match self.conn.read_message().await? {
                Message::ReadyForQuery(_) => break,
                Message::ErrorResponse(body) => {
                    error = Some(self.conn.server_error(body.fields()));
                }
                Message::EmptyQueryResponse => {}
                other => {
                    if let Some(other) = sets.handle(&self.conn, other)? {
                        return Err(self.conn.unexpected("in a query result", &other));
                    }
                }
            }
        }
        self.unusable = None;
        if let Some(error) = error {
            return Err(error);
        }
        Ok(sets.finish().into_iter().flatten().collect())
    }

    /// Starts `BASE_BACKUP` (PostgreSQL 15 or later) and returns the stream of its events;
    /// see [`BaseBackup`]. Returns once the server has done its checkpoint and sent the
    /// start position and tablespace list.
    ///
    /// Fails with [`Error::UnsupportedServer`] on servers older than 15, whose `BASE_BACKUP`
    /// uses another syntax and one COPY stream per tablespace.
    pub async fn base_backup(&mut self, opts: &BaseBackupOptions) -> Result<BaseBackup<'_>> {
        let major = self.server_major_version();
        if major.is_none_or(|major| major < 15) {
            return Err(Error::UnsupportedServer {
                host: self.conn.host.clone(),
                port: self.conn.port,
                version: self.server_version().to_owned(),
                what: "the BASE_BACKUP streaming format",
                needed: 15,
            });
        }
        let command = opts.command()?;
        self.begin_command()?;
        self.conn.send_query(&command).await?;
        tracing::debug!(host = %self.conn.host, port = self.conn.port, %command, "base backup started");
        BaseBackup::start(self).await
    }

    /// Sends `Terminate` and closes the connection.
    pub async fn close(mut self) -> Result<()> {
        self.conn.terminate().await
    }

    /// Marks the connection busy until the command completes; fails if an earlier command
    /// left it out of step.
    fn begin_command(&mut self) -> Result<()> {
        if let Some(reason) = self.unusable {
            return Err(Error::Unusable {
                host: self.conn.host.clone(),
                port: self.conn.port,
                reason,
            });
        }
        self.unusable = Some("an earlier command or base backup did not run to its end");
        Ok(())
    }

    pub(crate) fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// Called when a command has been read to its `ReadyForQuery`.
    pub(crate) fn command_done(&mut self) {
        self.unusable = None;
    }
}

/// Collects the result sets of a command: each is a `RowDescription`, `DataRow`s and an
/// optional `CommandComplete` (a new `RowDescription` also ends the previous set).
#[derive(Debug, Default)]
pub(crate) struct ResultSets {
    done: Vec<Vec<Row>>,
    open: Option<(Arc<[String]>, Vec<Row>)>,
}

impl ResultSets {
    /// Takes in a message if it belongs to a result set; returns it otherwise.
    pub(crate) fn handle(&mut self, conn: &Conn, message: Message) -> Result<Option<Message>> {
        match message {
            Message::RowDescription(body) => {
                self.close();
                self.open = Some((column_names(conn, &body)?, Vec::new()));
            }
            Message::DataRow(body) => {
                let Some((columns, rows)) = &mut self.open else {
                    return Err(conn.protocol_err("DataRow without RowDescription".to_owned()));
                };
                rows.push(Row {
                    columns: columns.clone(),
                    values: row_values(conn, &body)?,
                });
            }
            Message::CommandComplete(_) => self.close(),
            other => return Ok(Some(other)),
        }
        Ok(None)
    }

    fn close(&mut self) {
        if let Some((_, rows)) = self.open.take() {
            self.done.push(rows);
        }
    }

    /// The result sets received, oldest first.
    pub(crate) fn finish(mut self) -> Vec<Vec<Row>> {
        self.close();
        self.done
    }
}

fn column_names(conn: &Conn, body: &RowDescriptionBody) -> Result<Arc<[String]>> {
    let mut names = Vec::new();
    let mut fields = body.fields();
    while let Some(field) = fields.next().map_err(|e| conn.decode_err(e))? {
        names.push(field.name().to_owned());
    }
    Ok(names.into())
}

fn row_values(conn: &Conn, body: &DataRowBody) -> Result<Vec<Option<String>>> {
    let buffer = body.buffer();
    let mut values = Vec::new();
    let mut ranges = body.ranges();
    while let Some(range) = ranges.next().map_err(|e| conn.decode_err(e))? {
        values.push(match range {
            None => None,
            Some(range) => {
                let bytes = buffer
                    .get(range)
                    .ok_or_else(|| conn.protocol_err("DataRow value out of bounds".to_owned()))?;
                Some(String::from_utf8(bytes.to_vec()).map_err(|_| {
                    conn.protocol_err("DataRow value is not valid UTF-8".to_owned())
                })?)
            }
        });
    }
    Ok(values)
}

pub(crate) fn parse_lsn(conn: &Conn, text: &str) -> Result<Lsn> {
    text.parse()
        .map_err(|e| conn.protocol_err(format!("invalid LSN from server: {e}")))
}

pub(crate) fn parse_timeline(conn: &Conn, text: &str) -> Result<TimelineId> {
    text.parse::<u32>()
        .ok()
        .and_then(|tli| TimelineId::new(tli).ok())
        .ok_or_else(|| conn.protocol_err(format!("invalid timeline '{text}' from server")))
}
