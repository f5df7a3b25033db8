//! `walferry-archive backup`: a base backup over the replication protocol, stored as parts and
//! committed by its manifest.

use std::io::Read as _;

use walferry_manifest::BackupManifest;
use walferry_manifest::backup::FileKind;
use walferry_testutil::dirs::TestDir;

use crate::util::*;

/// A primary archiving into a local repository, some rows, then `walferry-archive backup`;
/// the stored backup must reassemble into the tar PostgreSQL sent, with every file's CRC.
#[test]
fn backup_local() {
    let dir = TestDir::new("backup-local").unwrap();
    let repo = Repo::local(&dir);
    let primary = primary_with_rows(&dir, &repo, 2000);

    let conninfo = primary.conninfo();
    let run = walferry(
        ARCHIVE,
        &["backup", "--conninfo", &conninfo, "--part-size", "1"],
        &repo.env,
        dir.path(),
    );
    run.expect(0, &[]);

    let root = repo.local_root.as_ref().unwrap();
    let manifests: Vec<String> = repo
        .local_objects()
        .into_iter()
        .filter(|o| o.starts_with("backups/") && o.ends_with("/manifest.json"))
        .collect();
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    let manifest = BackupManifest::from_json(&std::fs::read(root.join(&manifests[0])).unwrap())
        .expect("the manifest parses and validates");
    assert_eq!(
        manifests[0],
        format!("backups/{}/manifest.json", manifest.label)
    );
    assert_eq!(
        manifest.system_identifier,
        primary.system_identifier().unwrap()
    );
    assert!(manifest.stop_lsn >= manifest.start_lsn);
    assert_eq!(manifest.start_timeline.get(), 1);

    // Parts of base.tar, in order, decode and concatenate to the stream.
    let mut stream = Vec::new();
    let base: Vec<_> = manifest.stream_parts(None).collect();
    assert!(base.len() > 1, "1 MiB parts: several of them");
    for part in &base {
        let path = root.join(format!("backups/{}/{}", manifest.label, part.name));
        let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(body.len() as u64, part.compressed_bytes, "{}", part.name);
        let bytes = walferry_codec::decode(&body, part.original_bytes).unwrap();
        assert_eq!(bytes.len() as u64, part.original_bytes, "{}", part.name);
        assert_eq!(crc32fast::hash(&bytes), part.crc32.0, "{}", part.name);
        stream.extend_from_slice(&bytes);
    }
    for part in &manifest.parts {
        let path = root.join(format!("backups/{}/{}", manifest.label, part.name));
        assert!(path.is_file(), "{} exists", path.display());
    }

    // A real tar with PG_VERSION and a backup_label naming this backup.
    let mut archive = tar::Archive::new(&stream[..]);
    let mut names = Vec::new();
    let mut label_text = String::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        if path == "backup_label" {
            entry.read_to_string(&mut label_text).unwrap();
        }
        names.push(path);
    }
    assert!(names.iter().any(|n| n == "PG_VERSION"), "{names:?}");
    assert!(
        label_text.contains(&format!("LABEL: {}", manifest.label)),
        "{label_text}"
    );

    // Every regular file's CRC at its recorded offset.
    let mut checked = 0;
    for file in manifest.files.iter().filter(|f| f.tablespace.is_none()) {
        if let FileKind::File {
            size,
            crc32,
            offset,
        } = file.kind
        {
            let content = &stream[offset as usize..(offset + size) as usize];
            assert_eq!(crc32fast::hash(content), crc32.0, "{}", file.path);
            checked += 1;
        }
    }
    assert_eq!(checked, manifest.totals.files);
    let version = manifest
        .files
        .iter()
        .find(|f| f.path == "PG_VERSION")
        .unwrap();
    let FileKind::File { size, offset, .. } = version.kind else {
        panic!("PG_VERSION is a file")
    };
    let text = std::str::from_utf8(&stream[offset as usize..(offset + size) as usize]).unwrap();
    assert_eq!(text.trim(), manifest.pg_version.major().to_string());

    // WAIT: the segment holding the backup's end is archived before the command returns.
    let seg = manifest.wal_segment_size.bytes();
    let segno = (manifest.stop_lsn.0 - 1) / seg;
    let per_id = 0x1_0000_0000 / seg;
    let end_segment = format!(
        "{:08X}{:08X}{:08X}",
        manifest.stop_timeline.get(),
        segno / per_id,
        segno % per_id
    );
    assert!(
        local_segment_object(&repo, &end_segment).is_file(),
        "end segment {end_segment} archived"
    );

    // The same label again is refused, and leaves the committed backup alone.
    let again = walferry(
        ARCHIVE,
        &[
            "backup",
            "--conninfo",
            &conninfo,
            "--label",
            &manifest.label,
        ],
        &repo.env,
        dir.path(),
    );
    again.expect(3, &["already exists"]);
}

/// The same against the S3 server: the backup commits, and its label is then taken.
#[test]
fn backup_s3() {
    let dir = TestDir::new("backup-s3").unwrap();
    let repo = Repo::s3(&dir);
    let primary = primary_with_rows(&dir, &repo, 500);
    let conninfo = primary.conninfo();
    let args = [
        "backup",
        "--conninfo",
        &conninfo,
        "--label",
        "s3-first",
        "--part-size",
        "1",
        "--jobs",
        "2",
    ];
    walferry(ARCHIVE, &args, &repo.env, dir.path()).expect(0, &[]);
    // Committed: the manifest exists, so the label is refused before any work.
    walferry(ARCHIVE, &args, &repo.env, dir.path())
        .expect(3, &["backup 's3-first' already exists", "manifest.json"]);
}

/// A server that does not archive into the repository: the backup completes on the server
/// but is not committed, because its last WAL segment never reaches the archive.
#[test]
fn backup_without_archiving_is_not_committed() {
    let dir = TestDir::new("backup-no-archive").unwrap();
    let repo = Repo::local(&dir);
    let primary = start_cluster(
        &dir,
        "primary",
        &walferry_testutil::pg::ClusterOptions::default(),
    );
    create_table(&primary);
    let conninfo = primary.conninfo();
    let run = walferry(
        ARCHIVE,
        &[
            "backup",
            "--conninfo",
            &conninfo,
            "--label",
            "unarchived",
            "--archive-timeout",
            "2",
        ],
        &repo.env,
        dir.path(),
    );
    run.expect(5, &["is not in", "was not committed", "archive_command"]);
    assert!(
        !repo
            .local_objects()
            .iter()
            .any(|o| o.ends_with("manifest.json")),
        "{:?}",
        repo.local_objects()
    );
}
