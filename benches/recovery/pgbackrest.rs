//! pgBackRest 2.45 beside walferry: its configuration for pushing (a posix and an S3
//! repository) and for asynchronous `archive-get` from each, and stunnel, because pgBackRest's
//! S3 driver speaks only TLS.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use walferry_testutil::dirs::TestDir;
use walferry_testutil::pg::{self, Cluster};
use walferry_testutil::s3::S3Server;

use crate::{BUCKET, check_output};

/// Where `archive-get` reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repo {
    Posix,
    S3 { cloud: bool },
}

/// pgBackRest's files and the TLS terminator in front of both S3 servers.
#[derive(Debug)]
pub struct PgBackRest {
    dir: PathBuf,
    pub push_config: PathBuf,
    posix_repo: PathBuf,
    tls_plain: u16,
    tls_cloud: u16,
    access_key: String,
    secret_key: String,
    stunnel: Child,
    pub spool: PathBuf,
}

impl Drop for PgBackRest {
    fn drop(&mut self) {
        let _ = self.stunnel.kill();
        let _ = self.stunnel.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn have(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

impl PgBackRest {
    /// Writes the configuration and starts stunnel; `None` when pgBackRest or stunnel is not
    /// installed.
    pub fn setup(dir: &TestDir, plain: &S3Server, cloud: &S3Server) -> Option<PgBackRest> {
        have("pgbackrest")?;
        let stunnel = have("stunnel4").or_else(|| have("stunnel"))?;
        let root = dir.join("pgbackrest");
        for sub in ["", "lock", "log", "spool-push", "spool-get", "repo"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        pg::chown_to_cluster_user(&root).unwrap();

        // A self-signed certificate for stunnel; pgBackRest is told not to verify it.
        let mut req = Command::new("openssl");
        req.args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(root.join("key.pem"))
        .arg("-out")
        .arg(root.join("cert.pem"));
        check_output(req, "openssl req");

        let (tls_plain, tls_cloud) = (free_port(), free_port());
        let conf = root.join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\noutput = {log}\ndebug = 3\n\n\
                 [s3-plain]\naccept = 127.0.0.1:{tls_plain}\nconnect = 127.0.0.1:{plain}\ncert = {cert}\nkey = {key}\n\n\
                 [s3-cloud]\naccept = 127.0.0.1:{tls_cloud}\nconnect = 127.0.0.1:{cloud}\ncert = {cert}\nkey = {key}\n",
                log = root.join("stunnel.log").display(),
                plain = plain.port(),
                cloud = cloud.port(),
                cert = root.join("cert.pem").display(),
                key = root.join("key.pem").display(),
            ),
        )
        .unwrap();
        let stunnel = Command::new(stunnel)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stunnel");
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [tls_plain, tls_cloud] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "stunnel does not listen on {port}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        let mut this = PgBackRest {
            dir: root.clone(),
            push_config: root.join("push.conf"),
            posix_repo: root.join("repo"),
            tls_plain,
            tls_cloud,
            access_key: plain.access_key().to_owned(),
            secret_key: plain.secret_key().to_owned(),
            stunnel,
            spool: root.join("spool-get"),
        };
        this.push_config = root.join("push.conf");
        Some(this)
    }

    /// The `[global]` lines shared by every configuration.
    fn common(&self, spool: &str) -> String {
        format!(
            "lock-path={dir}/lock\nlog-path={dir}/log\nlog-level-console=warn\nlog-level-stderr=warn\nlog-level-file=off\n\
             spool-path={dir}/{spool}\narchive-async=y\nprocess-max=2\ncompress-type=zst\n",
            dir = self.dir.display()
        )
    }

    /// A repository's lines, numbered `n`.
    fn repo(&self, n: u32, repo: Repo) -> String {
        self.repo_at(n, repo, "/pgbackrest")
    }

    /// A repository's lines, numbered `n`, with an S3 repository under `path`.
    fn repo_at(&self, n: u32, repo: Repo, path: &str) -> String {
        match repo {
            Repo::Posix => format!(
                "repo{n}-type=posix\nrepo{n}-path={}\n",
                self.posix_repo.display()
            ),
            Repo::S3 { cloud } => format!(
                "repo{n}-type=s3\nrepo{n}-path={path}\nrepo{n}-s3-bucket={BUCKET}\n\
                 repo{n}-s3-endpoint=127.0.0.1\nrepo{n}-storage-port={port}\nrepo{n}-s3-region=us-east-1\n\
                 repo{n}-s3-key={key}\nrepo{n}-s3-key-secret={secret}\nrepo{n}-s3-uri-style=path\n\
                 repo{n}-storage-verify-tls=n\n",
                port = if cloud {
                    self.tls_cloud
                } else {
                    self.tls_plain
                },
                key = self.access_key,
                secret = self.secret_key,
            ),
        }
    }

    /// Writes the push configuration for `primary` (both repositories) and creates the stanza.
    pub fn stanza_create(&self, primary: &Cluster) {
        let text = format!(
            "[global]\n{}{}{}\n[bench]\npg1-path={}\npg1-socket-path={}\npg1-port={}\npg1-user=postgres\n",
            self.common("spool-push"),
            self.repo(1, Repo::Posix),
            self.repo(2, Repo::S3 { cloud: false }),
            primary.data_dir().display(),
            primary.socket_dir().display(),
            primary.port()
        );
        write_config(&self.push_config, &text);
        let mut create = Command::new("pgbackrest");
        create
            .arg(format!("--config={}", self.push_config.display()))
            .args(["--stanza=bench", "stanza-create"]);
        check_output(pg::as_cluster_user(create), "pgbackrest stanza-create");
    }

    /// The configuration file for `archive-get` from `repo` into the data directory `pgdata`;
    /// written on first use.
    pub fn get_config(&self, repo: Repo, pgdata: &Path) -> PathBuf {
        let name = match repo {
            Repo::Posix => "get-posix.conf",
            Repo::S3 { cloud: false } => "get-s3-plain.conf",
            Repo::S3 { cloud: true } => "get-s3-cloud.conf",
        };
        let path = self.dir.join(name);
        let text = format!(
            "[global]\n{}{}\n[bench]\npg1-path={}\n",
            self.common("spool-get"),
            self.repo(1, repo),
            pgdata.display()
        );
        write_config(&path, &text);
        path
    }

    /// A configuration for asynchronous `archive-push` from the data directory `pgdata` into a
    /// fresh repository `path` in `repo`, with its own spool and `process-max` uploads at
    /// once; its stanza is created from `pgdata`'s `pg_control` (the server need not run).
    /// Returns the configuration file.
    pub fn push_repository(
        &self,
        name: &str,
        repo: Repo,
        path: &str,
        pgdata: &Path,
        process_max: u32,
    ) -> PathBuf {
        let spool = format!("spool-{name}");
        std::fs::create_dir_all(self.dir.join(&spool)).unwrap();
        pg::chown_to_cluster_user(&self.dir.join(&spool)).unwrap();
        let config = self.dir.join(format!("{name}.conf"));
        let text = format!(
            "[global]\n{}{}\n[global:archive-push]\nprocess-max={process_max}\n\n[bench]\npg1-path={}\n",
            self.common(&spool),
            self.repo_at(1, repo, path),
            pgdata.display()
        );
        write_config(&config, &text);
        let mut create = Command::new("pgbackrest");
        create.arg(format!("--config={}", config.display())).args([
            "--stanza=bench",
            "--no-online",
            "stanza-create",
        ]);
        check_output(pg::as_cluster_user(create), "pgbackrest stanza-create");
        config
    }

    /// Stops every pgBackRest process still running and empties the archive-get spool.
    pub fn reset(&self) {
        let pattern = format!("pgbackrest.*{}", self.dir.display());
        let _ = Command::new("pkill").args(["-f", &pattern]).status();
        std::thread::sleep(Duration::from_millis(100));
        let _ = Command::new("pkill").args(["-9", "-f", &pattern]).status();
        let _ = std::fs::remove_dir_all(&self.spool);
        std::fs::create_dir_all(&self.spool).unwrap();
        pg::chown_to_cluster_user(&self.spool).unwrap();
    }
}

fn write_config(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    pg::chown_to_cluster_user(path).unwrap();
}
