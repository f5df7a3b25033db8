//! The public API against a real PostgreSQL (15 or later), through `walferry_testutil::pg`.
//!
//! Each test skips with a printed line when PostgreSQL is not installed.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::path::Path;

use walferry_pgwire::{
    BackupEvent, BaseBackupOptions, ConnectOptions, Error, Host, ReplicationClient,
};
use walferry_testutil::dirs::TestDir;
use walferry_testutil::pg::{self, Cluster, ClusterOptions};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Options from a conninfo string alone, ignoring the `PG*` variables of whoever runs the tests.
fn options(conninfo: &str) -> ConnectOptions {
    ConnectOptions::from_conninfo_with_env(conninfo, |_| None).expect("conninfo")
}

fn started_cluster(dir: &TestDir, opts: &ClusterOptions) -> Cluster {
    let mut cluster = Cluster::init(&dir.join("data"), opts).expect("initdb");
    cluster.start().expect("start");
    cluster
}

/// What a base backup sent, gathered in memory (the test clusters are small).
#[derive(Debug, Default)]
struct Collected {
    start: Option<(walferry_wal::Lsn, walferry_wal::TimelineId)>,
    end: Option<(walferry_wal::Lsn, walferry_wal::TimelineId)>,
    tablespaces: Vec<walferry_pgwire::TablespaceInfo>,
    /// Archive name → (tablespace location, concatenated tar bytes).
    archives: BTreeMap<String, (Option<String>, Vec<u8>)>,
    order: Vec<String>,
    manifest: Option<Vec<u8>>,
    last_progress: Option<u64>,
    largest_chunk: usize,
}

async fn collect(client: &mut ReplicationClient, opts: &BaseBackupOptions) -> Collected {
    let mut backup = client.base_backup(opts).await.expect("start base backup");
    let mut got = Collected::default();
    let mut current: Option<String> = None;
    while let Some(event) = backup.next_event().await.expect("backup event") {
        match event {
            BackupEvent::Started {
                start_lsn,
                timeline,
            } => got.start = Some((start_lsn, timeline)),
            BackupEvent::Tablespaces(list) => got.tablespaces = list,
            BackupEvent::ArchiveStart {
                name,
                tablespace_location,
            } => {
                got.order.push(name.clone());
                got.archives
                    .insert(name.clone(), (tablespace_location, Vec::new()));
                current = Some(name);
            }
            BackupEvent::Data(chunk) => {
                got.largest_chunk = got.largest_chunk.max(chunk.len());
                let name = current.as_ref().expect("data inside an archive");
                got.archives
                    .get_mut(name)
                    .expect("archive")
                    .1
                    .extend_from_slice(&chunk);
            }
            BackupEvent::Progress { bytes_done } => got.last_progress = Some(bytes_done),
            BackupEvent::ManifestStart => got.manifest = Some(Vec::new()),
            BackupEvent::ManifestData(chunk) => got
                .manifest
                .as_mut()
                .expect("manifest started")
                .extend_from_slice(&chunk),
            BackupEvent::Finished { end_lsn, timeline } => got.end = Some((end_lsn, timeline)),
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert!(
        backup.next_event().await.expect("after the end").is_none(),
        "the stream stays ended"
    );
    got
}

/// Tar member paths → contents (regular files only).
fn untar(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(bytes);
    let mut files = BTreeMap::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read member");
        files.insert(path, data);
    }
    files
}

#[test]
fn unix_socket_trust_identify_system_and_show() {
    if pg::bindir_or_skip("unix_socket_trust_identify_system_and_show").is_none() {
        return;
    }
    let dir = TestDir::new("pgwire-identify").expect("test dir");
    let cluster = started_cluster(&dir, &ClusterOptions::default());
    let expected_id = cluster.system_identifier().expect("system id");
    let opts = options(&format!(
        "{} application_name=walferry-test",
        cluster.conninfo()
    ));
    assert!(matches!(opts.host, Host::Unix(_)));

    runtime().block_on(async {
        let mut client = ReplicationClient::connect(&opts).await.expect("connect");
        assert!(client.server_major_version().expect("version") >= 15);
        assert!(client.pg_version().is_some());

        let system = client.identify_system().await.expect("identify");
        assert_eq!(system.system_identifier, expected_id);
        assert_eq!(system.timeline.get(), 1);
        assert!(system.xlogpos.is_valid());
        assert_eq!(
            system.dbname, None,
            "physical replication is not tied to a database"
        );

        let rows = client
            .simple_query("SHOW wal_segment_size")
            .await
            .expect("show");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get_by_name("wal_segment_size"), Some("16MB"));

        // SQL is refused on a physical replication connection; the error carries the
        // SQLSTATE and the connection stays usable.
        let err = client
            .simple_query("SELECT 1")
            .await
            .expect_err("SQL on a walsender");
        assert!(matches!(err, Error::Server { .. }), "{err}");
        assert!(err.sqlstate().is_some());
        assert!(
            err.to_string().contains(&format!(":{}", cluster.port())),
            "{err}"
        );
        client
            .identify_system()
            .await
            .expect("usable after an error");
        client.close().await.expect("close");
    });
}

#[test]
fn connect_refused_names_the_server() {
    let opts = options("host=/nonexistent-walferry-dir port=5999 user=u");
    let err = runtime()
        .block_on(ReplicationClient::connect(&opts))
        .expect_err("no server");
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(
        err.to_string()
            .starts_with("could not connect to server at /nonexistent-walferry-dir:5999"),
        "{err}"
    );
}

#[test]
fn tcp_password_authentication() {
    if pg::bindir_or_skip("tcp_password_authentication").is_none() {
        return;
    }
    let dir = TestDir::new("pgwire-auth").expect("test dir");
    let mut cluster = Cluster::init(&dir.join("data"), &ClusterOptions::default()).expect("initdb");
    // Password lines for TCP replication connections go before initdb's trust lines.
    let hba = cluster.data_dir().join("pg_hba.conf");
    let original = fs::read_to_string(&hba).expect("read pg_hba.conf");
    fs::write(
        &hba,
        format!(
            "host replication scram_user 127.0.0.1/32 scram-sha-256\n\
             host replication md5_user 127.0.0.1/32 md5\n\
             host replication clear_user 127.0.0.1/32 password\n\
             {original}"
        ),
    )
    .expect("write pg_hba.conf");
    cluster.start().expect("start");
    cluster
        .psql(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE scram_user REPLICATION LOGIN PASSWORD 's3cret';
             CREATE ROLE clear_user REPLICATION LOGIN PASSWORD 'pl@in';
             SET password_encryption = 'md5';
             CREATE ROLE md5_user REPLICATION LOGIN PASSWORD 'md5 pw';",
        )
        .expect("create roles");
    // The roles' stored verifiers decide what md5 lines really use (md5 with an md5 hash,
    // SCRAM with a SCRAM verifier), so check they are what the test means.
    let stored = cluster
        .psql(
            "SELECT rolname || '=' || split_part(rolpassword, '$', 1) FROM pg_authid \
             WHERE rolname IN ('scram_user', 'md5_user') ORDER BY rolname",
        )
        .expect("stored passwords");
    assert!(stored.starts_with("md5_user=md5"), "{stored}");
    assert!(stored.ends_with("scram_user=SCRAM-SHA-256"), "{stored}");
    let port = cluster.port();
    let expected_id = cluster.system_identifier().expect("system id");

    runtime().block_on(async {
        for (user, password) in [
            ("scram_user", "s3cret"),
            ("md5_user", "md5 pw"),
            ("clear_user", "pl@in"),
        ] {
            let opts = options(&format!(
                "host=127.0.0.1 port={port} user={user} password='{password}' connect_timeout=30"
            ));
            let mut client = ReplicationClient::connect(&opts)
                .await
                .unwrap_or_else(|err| panic!("connect as {user}: {err}"));
            let system = client.identify_system().await.expect("identify");
            assert_eq!(system.system_identifier, expected_id, "{user}");
        }

        let wrong = options(&format!(
            "host=127.0.0.1 port={port} user=scram_user password=wrong"
        ));
        let err = ReplicationClient::connect(&wrong)
            .await
            .expect_err("wrong password");
        assert_eq!(err.sqlstate(), Some("28P01"), "{err}");
        assert!(err.is_auth_failure());
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(
            text.contains(&format!("127.0.0.1:{port}"))
                && text.contains("password authentication failed"),
            "{text}"
        );

        let missing = options(&format!("host=127.0.0.1 port={port} user=md5_user"));
        let err = ReplicationClient::connect(&missing)
            .await
            .expect_err("no password");
        assert!(matches!(err, Error::Auth { .. }), "{err}");
        assert!(err.to_string().contains("none was given"), "{err}");
    });
}

#[test]
fn base_backup_of_the_main_directory() {
    if pg::bindir_or_skip("base_backup_of_the_main_directory").is_none() {
        return;
    }
    let dir = TestDir::new("pgwire-backup").expect("test dir");
    let cluster = started_cluster(&dir, &ClusterOptions::default());
    cluster
        .psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10000) g")
        .expect("data");
    let before = cluster.current_lsn().expect("lsn");
    let before: walferry_wal::Lsn = before.parse().expect("parse lsn");
    let opts = options(&cluster.conninfo());

    runtime().block_on(async {
        let mut client = ReplicationClient::connect(&opts).await.expect("connect");
        let got = collect(
            &mut client,
            &BaseBackupOptions {
                label: "pgwire test".to_owned(),
                progress: true,
                manifest: true,
                ..BaseBackupOptions::default()
            },
        )
        .await;

        let (start, start_tli) = got.start.expect("started");
        let (end, end_tli) = got.end.expect("finished");
        assert!(
            start >= before,
            "start {start} before the earlier LSN {before}"
        );
        assert!(end >= start, "end {end} < start {start}");
        assert_eq!((start_tli.get(), end_tli.get()), (1, 1));

        assert_eq!(got.tablespaces.len(), 1);
        let main = &got.tablespaces[0];
        assert_eq!((main.oid, main.location.as_deref()), (None, None));
        assert!(main.size_kib.expect("size with PROGRESS") > 1000);

        assert_eq!(got.order, ["base.tar"]);
        let (location, tar) = &got.archives["base.tar"];
        assert_eq!(location, &None);
        assert!(
            got.largest_chunk <= 64 * 1024,
            "chunk of {}",
            got.largest_chunk
        );
        assert!(got.last_progress.expect("progress") > 0);

        let files = untar(tar);
        for name in ["PG_VERSION", "global/pg_control", "backup_label"] {
            assert!(files.contains_key(name), "{name} missing from base.tar");
        }
        assert!(String::from_utf8_lossy(&files["PG_VERSION"]).starts_with("1"));
        let label = String::from_utf8_lossy(&files["backup_label"]).into_owned();
        assert!(label.contains("LABEL: pgwire test"), "{label}");
        assert!(
            label.contains(&format!("START WAL LOCATION: {start}")),
            "{label} vs {start}"
        );

        let manifest = got.manifest.expect("manifest");
        let manifest = String::from_utf8(manifest).expect("utf-8 manifest");
        assert!(
            manifest.contains("\"PostgreSQL-Backup-Manifest-Version\""),
            "{manifest:.200}"
        );
        assert!(
            manifest.contains(&format!("\"Start-LSN\": \"{start}\"")),
            "{manifest:.200}"
        );

        // The client is usable again once the stream has ended.
        client
            .identify_system()
            .await
            .expect("identify after backup");
    });
}

#[test]
fn base_backup_with_a_tablespace() {
    if pg::bindir_or_skip("base_backup_with_a_tablespace").is_none() {
        return;
    }
    let dir = TestDir::new("pgwire-tblspc").expect("test dir");
    let cluster = started_cluster(&dir, &ClusterOptions::default());
    let location = dir.create_dir("ts").expect("tablespace dir");
    cluster
        .psql(&format!(
            "CREATE TABLESPACE ts LOCATION {}",
            pg::sql_literal(&location.to_string_lossy())
        ))
        .expect("create tablespace");
    cluster
        .psql("CREATE TABLE in_ts TABLESPACE ts AS SELECT g FROM generate_series(1, 1000) g")
        .expect("table in tablespace");
    let oid: u32 = cluster
        .psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts'")
        .expect("oid")
        .parse()
        .expect("parse oid");
    let opts = options(&cluster.conninfo());

    runtime().block_on(async {
        let mut client = ReplicationClient::connect(&opts).await.expect("connect");
        let got = collect(&mut client, &BaseBackupOptions::default()).await;

        let location_text = location.to_string_lossy().into_owned();
        assert_eq!(got.tablespaces.len(), 2);
        assert_eq!(got.tablespaces[0].oid, Some(oid));
        assert_eq!(
            got.tablespaces[0].location.as_deref(),
            Some(&*location_text)
        );
        assert_eq!(
            got.tablespaces[0].size_kib, None,
            "no size without PROGRESS"
        );
        assert_eq!(got.tablespaces[1].oid, None);

        let ts_name = format!("{oid}.tar");
        assert_eq!(got.order, [ts_name.clone(), "base.tar".to_owned()]);
        let (ts_location, ts_tar) = &got.archives[&ts_name];
        assert_eq!(ts_location.as_deref(), Some(&*location_text));
        let ts_files = untar(ts_tar);
        assert!(
            ts_files
                .keys()
                .any(|p| p.starts_with("PG_") && p.contains('/')),
            "tablespace archive holds the version directory: {:?}",
            ts_files.keys().take(5).collect::<Vec<_>>()
        );

        let base = untar(&got.archives["base.tar"].1);
        let map = String::from_utf8_lossy(base.get("tablespace_map").expect("tablespace_map"))
            .into_owned();
        assert!(map.contains(&format!("{oid} {location_text}")), "{map}");
        assert!(base.contains_key("backup_label"));
        let (start, _) = got.start.expect("start");
        let (end, _) = got.end.expect("end");
        assert!(end >= start);

        // A backup dropped half-way leaves the client unusable, and says so.
        let mut backup = client
            .base_backup(&BaseBackupOptions::default())
            .await
            .expect("second backup");
        while let Some(event) = backup.next_event().await.expect("event") {
            if matches!(event, BackupEvent::Data(_)) {
                break;
            }
        }
        drop(backup);
        let err = client.identify_system().await.expect_err("mid-backup");
        assert!(matches!(err, Error::Unusable { .. }), "{err}");
    });
    drop(cluster);
    assert!(Path::new(&location).exists());
}
