//! The public API used together, the way the archive and restore paths use it.

use walferry_wal::{
    Error, ExpectedSegment, HeaderError, Lsn, PgVersion, SegNo, SegmentHeader, SegmentName,
    TimelineHistory, TimelineId, WalFileName, WalSegSize, header,
};

fn tli(id: u32) -> TimelineId {
    TimelineId::new(id).expect("test timelines are not 0")
}

/// A cluster promoted to timeline 2 at 0/3000158, in segment 3 of 16 MiB segments.
fn promoted() -> TimelineHistory {
    TimelineHistory::parse(tli(2), "1\t0/3000158\tno recovery target specified\n")
        .expect("the history is valid")
}

#[test]
fn restore_command_request_for_a_switch_segment() {
    let size = WalSegSize::DEFAULT;
    let history = promoted();

    // PostgreSQL asks for the timeline 2 copy of segment 3, which starts with timeline 1 WAL.
    let requested = WalFileName::parse("000000020000000000000003").unwrap();
    let segment = *requested.segment().unwrap();
    let segno = segment.segno(size).unwrap();
    assert_eq!(
        history.timeline_for_segment(segno, size),
        requested.timeline()
    );
    assert_eq!(
        history.timeline_for_segment(segno.prev().unwrap(), size),
        tli(1)
    );

    let header = SegmentHeader {
        pg_version: PgVersion::V17,
        info: header::INFO_LONG_HEADER,
        timeline: tli(1),
        page_address: segno.start_lsn(size).unwrap(),
        system_identifier: 7_400_000_000_000_000_001,
        segment_size: size,
        block_size: 8192,
    };
    let mut page = header.to_bytes().to_vec();
    page.resize(8192, 0);
    let parsed = SegmentHeader::parse(&page).unwrap();
    let expected = ExpectedSegment {
        name: segment,
        system_identifier: Some(7_400_000_000_000_000_001),
        segment_size: Some(size),
        pg_version: Some(PgVersion::V17),
    };
    parsed.check(&expected).unwrap();
    assert!(history.contains(parsed.timeline));

    // The same bytes stored under the next segment's name are caught.
    let next = SegmentName::new(tli(2), segno.next().unwrap(), size).unwrap();
    let err = parsed
        .check(&ExpectedSegment {
            name: next,
            ..expected
        })
        .unwrap_err();
    assert!(matches!(err, HeaderError::PageAddressMismatch { .. }));
    assert!(!err.is_wrong_system());
}

#[test]
fn archive_names_for_an_lsn_range() {
    let size = WalSegSize::new(64 << 20).unwrap();
    let start: Lsn = "FF/FC000028".parse().unwrap();
    let end: Lsn = "100/8000000".parse().unwrap();
    let mut names = Vec::new();
    let mut segno = start.segment_number(size);
    while segno <= end.segment_number(size) {
        names.push(
            SegmentName::new(TimelineId::FIRST, segno, size)
                .unwrap()
                .to_string(),
        );
        segno = segno.next().unwrap();
    }
    assert_eq!(
        names,
        [
            "00000001000000FF0000003F",
            "000000010000010000000000",
            "000000010000010000000001",
            "000000010000010000000002",
        ]
    );
    assert_eq!(end.checked_sub(start), Some(0x0C00_0000 - 0x28));
    assert_eq!(
        end.segment_number(size)
            .checked_sub(start.segment_number(size)),
        Some(3)
    );
}

#[test]
fn values_round_trip_through_json() {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Descriptor {
        pg_version: PgVersion,
        segment_size: WalSegSize,
        timeline: TimelineId,
        archived_through: Lsn,
        last_segment: SegNo,
        last_file: WalFileName,
    }

    let descriptor = Descriptor {
        pg_version: PgVersion::V16,
        segment_size: WalSegSize::DEFAULT,
        timeline: tli(3),
        archived_through: Lsn(0x5_0000_00A0),
        last_segment: SegNo(0x500),
        last_file: WalFileName::parse("000000030000000500000000.partial").unwrap(),
    };
    let json = serde_json::to_string(&descriptor).unwrap();
    assert_eq!(
        json,
        r#"{"pg_version":16,"segment_size":16777216,"timeline":3,"archived_through":"5/A0","last_segment":1280,"last_file":"000000030000000500000000.partial"}"#
    );
    assert_eq!(
        serde_json::from_str::<Descriptor>(&json).unwrap(),
        descriptor
    );
    let bad = json.replace("\"timeline\":3", "\"timeline\":0");
    assert!(serde_json::from_str::<Descriptor>(&bad).is_err());
}

#[test]
fn errors_name_their_input() {
    let cases: Vec<(Error, &str)> = vec![
        (
            WalFileName::parse("foo").unwrap_err(),
            "invalid WAL file name 'foo': expected 24 hexadecimal digits, optionally followed \
             by .partial or .<8 hexadecimal digits>.backup, or 8 hexadecimal digits followed by \
             .history",
        ),
        (
            WalFileName::parse("../000000010000000000000001").unwrap_err(),
            "invalid WAL file name '../000000010000000000000001': expected a bare file name, \
             not a path",
        ),
        (
            "0/xyz".parse::<Lsn>().unwrap_err(),
            "invalid LSN '0/xyz': a part is not hexadecimal",
        ),
        (
            WalSegSize::new(1000).unwrap_err(),
            "invalid WAL segment size 1000 bytes: expected a power of two from 1 MiB to 1 GiB",
        ),
        (
            PgVersion::try_from(12).unwrap_err(),
            "unsupported PostgreSQL major version 12: expected 13 to 17",
        ),
    ];
    for (error, message) in cases {
        assert_eq!(error.to_string(), message);
    }
}
