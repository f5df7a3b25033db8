//! The framed connection: a socket, a read buffer and a write buffer, plus startup and
//! authentication.
//!
//! Messages are parsed in place from one large read buffer ([`READ_BUFFER_SIZE`]); a parsed
//! message owns a reference-counted slice of that buffer, so `CopyData` payloads reach the
//! caller without being copied.

use std::collections::HashMap;
use std::fmt;
use std::io;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator as _;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpStream, UnixStream};

use crate::config::{ConnectOptions, Host};
use crate::error::{Severity, SqlState};
use crate::{Error, Result};

/// Bytes read from the socket at a time, at most. Base backups arrive as ~32 KiB `CopyData`
/// messages (`SINK_BUFFER_LENGTH` in basebackup.c), so one read carries several.
pub(crate) const READ_BUFFER_SIZE: usize = 256 * 1024;

/// Free space below which the read buffer is grown before the next read.
const MIN_READ_SPACE: usize = 16 * 1024;

/// A socket of either kind.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send + Sync + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + fmt::Debug> Transport for T {}

/// An open, authenticated or authenticating connection.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: Box<dyn Transport>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// The host (or socket directory) and port, for error messages.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `ParameterStatus` values reported by the server.
    pub(crate) params: HashMap<String, String>,
}

impl Conn {
    /// Opens the socket, without speaking the protocol yet.
    pub(crate) async fn open(opts: &ConnectOptions) -> Result<Conn> {
        let host = opts.host.to_string();
        let port = opts.port;
        let connect_err = |source| Error::Connect {
            host: host.clone(),
            port,
            source,
        };
        let stream: Box<dyn Transport> = match &opts.host {
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                Box::new(UnixStream::connect(&path).await.map_err(connect_err)?)
            }
            Host::Tcp(name) => {
                let stream = TcpStream::connect((name.as_str(), port))
                    .await
                    .map_err(connect_err)?;
                stream.set_nodelay(true).map_err(connect_err)?;
                Box::new(stream)
            }
        };
        Ok(Conn {
            stream,
            read_buf: BytesMut::with_capacity(READ_BUFFER_SIZE),
            write_buf: BytesMut::with_capacity(1024),
            host,
            port,
            params: HashMap::new(),
        })
    }

    /// Sends the startup packet for a physical replication connection and authenticates;
    /// returns once the server is ready for commands.
    pub(crate) async fn startup(&mut self, opts: &ConnectOptions) -> Result<()> {
        let mut params: Vec<(&str, &str)> =
            vec![("user", opts.user.as_str()), ("replication", "true")];
        if let Some(db) = &opts.dbname {
            params.push(("database", db));
        }
        if let Some(app) = &opts.application_name {
            params.push(("application_name", app));
        }
        frontend::startup_message(params, &mut self.write_buf).map_err(|e| self.encode_err(e))?;
        self.flush().await?;
        self.authenticate(opts).await?;
        loop {
            match self.read_message().await? {
                Message::BackendKeyData(_) => {}
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => return Err(self.server_error(body.fields())),
                other => return Err(self.unexpected("during startup", &other)),
            }
        }
    }

    async fn authenticate(&mut self, opts: &ConnectOptions) -> Result<()> {
        let mut password: Option<String> = None;
        let mut need_password = |conn: &Conn| -> Result<String> {
            if let Some(pw) = &password {
                return Ok(pw.clone());
            }
            let pw = opts
                .resolve_password()
                .ok_or_else(|| conn.auth_err(opts, "the server asked for a password, but none was given (password, PGPASSWORD or the password file)".to_owned()))?;
            password = Some(pw.clone());
            Ok(pw)
        };
        loop {
            match self.read_message().await? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    let pw = need_password(self)?;
                    frontend::password_message(pw.as_bytes(), &mut self.write_buf)
                        .map_err(|e| self.encode_err(e))?;
                    self.flush().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let pw = need_password(self)?;
                    let hash = md5_hash(opts.user.as_bytes(), pw.as_bytes(), body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.write_buf)
                        .map_err(|e| self.encode_err(e))?;
                    self.flush().await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut offered = Vec::new();
                    let mut mechanisms = body.mechanisms();
                    while let Some(mechanism) = mechanisms.next().map_err(|e| self.decode_err(e))? {
                        offered.push(mechanism.to_owned());
                    }
                    if !offered.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                        return Err(self.auth_err(
                            opts,
                            format!(
                                "the server offers SASL mechanisms {offered:?}, but this client \
                                 supports only {} without TLS",
                                sasl::SCRAM_SHA_256
                            ),
                        ));
                    }
                    let pw = need_password(self)?;
                    self.scram(opts, &pw).await?;
                }
                Message::ErrorResponse(body) => return Err(self.server_error(body.fields())),
                Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential
                | Message::AuthenticationGss
                | Message::AuthenticationSspi
                | Message::AuthenticationGssContinue(_) => {
                    return Err(self.auth_err(
                        opts,
                        "the server asked for GSSAPI, SSPI or Kerberos authentication, which \
                         this client does not support; HINT: use scram-sha-256, md5, password \
                         or trust in pg_hba.conf"
                            .to_owned(),
                    ));
                }
                other => return Err(self.unexpected("during authentication", &other)),
            }
        }
    }

    /// The SCRAM-SHA-256 exchange (RFC 7677), without channel binding (no TLS).
    async fn scram(&mut self, opts: &ConnectOptions, password: &str) -> Result<()> {
        let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), &mut self.write_buf)
            .map_err(|e| self.encode_err(e))?;
        self.flush().await?;
        match self.read_message().await? {
            Message::AuthenticationSaslContinue(body) => scram
                .update(body.data())
                .map_err(|e| self.auth_err(opts, format!("invalid SCRAM challenge: {e}")))?,
            Message::ErrorResponse(body) => return Err(self.server_error(body.fields())),
            other => return Err(self.unexpected("during SCRAM authentication", &other)),
        }
        frontend::sasl_response(scram.message(), &mut self.write_buf)
            .map_err(|e| self.encode_err(e))?;
        self.flush().await?;
        match self.read_message().await? {
            Message::AuthenticationSaslFinal(body) => scram.finish(body.data()).map_err(|e| {
                self.auth_err(
                    opts,
                    format!("the server's SCRAM signature is invalid: {e}"),
                )
            }),
            Message::ErrorResponse(body) => Err(self.server_error(body.fields())),
            other => Err(self.unexpected("during SCRAM authentication", &other)),
        }
    }

    /// Reads the next message, handling `ParameterStatus` and `NoticeResponse` on the way.
    pub(crate) async fn read_message(&mut self) -> Result<Message> {
        loop {
            if let Some(message) =
                Message::parse(&mut self.read_buf).map_err(|e| self.decode_err(e))?
            {
                match message {
                    Message::ParameterStatus(body) => {
                        let name = body.name().map_err(|e| self.decode_err(e))?;
                        let value = body.value().map_err(|e| self.decode_err(e))?;
                        self.params.insert(name.to_owned(), value.to_owned());
                    }
                    Message::NoticeResponse(body) => self.log_notice(body.fields()),
                    message => return Ok(message),
                }
                continue;
            }
            if self.read_buf.capacity() - self.read_buf.len() < MIN_READ_SPACE {
                self.read_buf.reserve(READ_BUFFER_SIZE);
            }
            let read = self
                .stream
                .read_buf(&mut self.read_buf)
                .await
                .map_err(|e| self.io_err(e))?;
            if read == 0 {
                return Err(self.io_err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection unexpectedly",
                )));
            }
        }
    }

    /// Queues a simple-protocol `Query` and sends it.
    pub(crate) async fn send_query(&mut self, sql: &str) -> Result<()> {
        frontend::query(sql, &mut self.write_buf).map_err(|e| self.encode_err(e))?;
        self.flush().await
    }

    /// Sends `Terminate` and closes the socket.
    pub(crate) async fn terminate(&mut self) -> Result<()> {
        frontend::terminate(&mut self.write_buf);
        self.flush().await?;
        self.stream.shutdown().await.map_err(|e| self.io_err(e))
    }

    /// Reads and drops messages up to and including `ReadyForQuery`, after an error.
    pub(crate) async fn drain_until_ready(&mut self) -> Result<()> {
        loop {
            if let Message::ReadyForQuery(_) = self.read_message().await? {
                return Ok(());
            }
        }
    }

    async fn flush(&mut self) -> Result<()> {
        let buf = self.write_buf.split();
        self.stream
            .write_all(&buf)
            .await
            .map_err(|e| self.io_err(e))?;
        self.stream.flush().await.map_err(|e| self.io_err(e))
    }

    fn log_notice(&self, fields: ErrorFields<'_>) {
        let notice = ServerMessage::collect(fields);
        let severity = notice.severity.as_str();
        if severity == "WARNING" {
            tracing::warn!(host = %self.host, port = self.port, code = %notice.code, "server warning: {}", notice.message);
        } else {
            tracing::info!(host = %self.host, port = self.port, code = %notice.code, "server notice: {}", notice.message);
        }
    }

    /// Converts an `ErrorResponse` into [`Error::Server`].
    pub(crate) fn server_error(&self, fields: ErrorFields<'_>) -> Error {
        let msg = ServerMessage::collect(fields);
        Error::Server {
            host: self.host.clone(),
            port: self.port,
            severity: Severity::parse(&msg.severity),
            code: SqlState::parse(&msg.code).unwrap_or(SqlState::INTERNAL_ERROR),
            message: msg.message,
            detail: msg.detail,
            hint: msg.hint,
        }
    }

    pub(crate) fn protocol_err(&self, reason: String) -> Error {
        Error::Protocol {
            host: self.host.clone(),
            port: self.port,
            reason,
        }
    }

    pub(crate) fn unexpected(&self, when: &str, message: &Message) -> Error {
        self.protocol_err(format!(
            "unexpected message '{}' {when}",
            message_name(message)
        ))
    }

    pub(crate) fn decode_err(&self, err: io::Error) -> Error {
        self.protocol_err(format!("malformed message: {err}"))
    }

    fn encode_err(&self, err: io::Error) -> Error {
        Error::Config {
            setting: "message".to_owned(),
            reason: format!(
                "cannot encode for server at {}:{}: {err}",
                self.host, self.port
            ),
        }
    }

    fn io_err(&self, source: io::Error) -> Error {
        Error::Io {
            host: self.host.clone(),
            port: self.port,
            source,
        }
    }

    fn auth_err(&self, opts: &ConnectOptions, reason: String) -> Error {
        Error::Auth {
            host: self.host.clone(),
            port: self.port,
            user: opts.user.clone(),
            reason,
        }
    }
}

/// The fields of an `ErrorResponse` or `NoticeResponse` that errors and logs use.
#[derive(Debug, Default)]
struct ServerMessage {
    severity: String,
    code: String,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
}

impl ServerMessage {
    /// Collects the fields; a malformed field list yields what was read before it.
    fn collect(mut fields: ErrorFields<'_>) -> ServerMessage {
        let mut msg = ServerMessage::default();
        let mut localized_severity = String::new();
        while let Ok(Some(field)) = fields.next() {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => msg.severity = value,
                b'S' => localized_severity = value,
                b'C' => msg.code = value,
                b'M' => msg.message = value,
                b'D' => msg.detail = Some(value),
                b'H' => msg.hint = Some(value),
                _ => {}
            }
        }
        if msg.severity.is_empty() {
            msg.severity = localized_severity;
        }
        msg
    }
}

/// A message's name, for protocol errors.
fn message_name(message: &Message) -> &'static str {
    match message {
        Message::AuthenticationOk
        | Message::AuthenticationCleartextPassword
        | Message::AuthenticationMd5Password(_)
        | Message::AuthenticationSasl(_)
        | Message::AuthenticationSaslContinue(_)
        | Message::AuthenticationSaslFinal(_)
        | Message::AuthenticationGss
        | Message::AuthenticationGssContinue(_)
        | Message::AuthenticationKerberosV5
        | Message::AuthenticationScmCredential
        | Message::AuthenticationSspi => "Authentication",
        Message::BackendKeyData(_) => "BackendKeyData",
        Message::BindComplete => "BindComplete",
        Message::CloseComplete => "CloseComplete",
        Message::CommandComplete(_) => "CommandComplete",
        Message::CopyData(_) => "CopyData",
        Message::CopyDone => "CopyDone",
        Message::CopyInResponse(_) => "CopyInResponse",
        Message::CopyOutResponse(_) => "CopyOutResponse",
        Message::DataRow(_) => "DataRow",
        Message::EmptyQueryResponse => "EmptyQueryResponse",
        Message::ErrorResponse(_) => "ErrorResponse",
        Message::NoData => "NoData",
        Message::NoticeResponse(_) => "NoticeResponse",
        Message::NotificationResponse(_) => "NotificationResponse",
        Message::ParameterDescription(_) => "ParameterDescription",
        Message::ParameterStatus(_) => "ParameterStatus",
        Message::ParseComplete => "ParseComplete",
        Message::PortalSuspended => "PortalSuspended",
        Message::ReadyForQuery(_) => "ReadyForQuery",
        Message::RowDescription(_) => "RowDescription",
        _ => "unknown",
    }
}
