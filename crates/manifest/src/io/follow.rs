//! Following the archived WAL from a segment, one listing of `wal/<TLI><LOG>/` at a time.

use std::collections::BTreeMap;

use walferry_store::{ArchiveStore, CancellationToken, ObjectKey};
use walferry_wal::{SegNo, SegmentName, TimelineHistory, TimelineId, WalFileName, WalSegSize};

use super::Error;
use super::catalog::load_history;
use crate::descriptor::RepoDescriptor;
use crate::layout;
use crate::timelines::{TimelineGraph, TimelinePath};

/// The segments PostgreSQL asks for from a first segment on, in order, along a timeline's path
/// (switch points included), to the end of the archived WAL on that path: what a WAL prefetch
/// fetches. The same sequence as the restore planner's, found without listing the whole
/// archive: [`WalFollower::start`] reads only history files, and [`WalFollower::next`] lists
/// one `wal/<TLI><LOG>/` prefix at a time (at most 4096 names), so memory stays the same
/// whatever the archive's size.
///
/// The sequence is empty when the first segment is not archived, or is not the copy of its
/// segment that the path reads (another timeline's copy of a switch segment). It ends at the
/// first segment of the path that is not archived.
#[derive(Debug)]
pub struct WalFollower {
    segment_size: WalSegSize,
    path: TimelinePath,
    /// The target's history, when it is not timeline 1.
    target_history: bool,
    /// Timelines after the target with a history file, in order: the ones PostgreSQL probes
    /// (and reads) when it picks a new timeline at promotion.
    later: Vec<TimelineId>,
    /// The next segment to return; `None` once the sequence ended.
    next: Option<SegNo>,
    /// The last listing: its `<TLI><LOG>` directory and the stored size of each segment in it.
    listed: Option<(String, BTreeMap<SegNo, u64>)>,
}

impl WalFollower {
    /// Reads the history files needed to follow the WAL from `first` towards `target`, or,
    /// when `target` is `None`, towards the newest timeline whose path reads `first` (history
    /// files are probed upward from `first`'s timeline, as PostgreSQL does for `latest`, but a
    /// timeline that does not descend from `first`'s is not chosen).
    ///
    /// Fails with [`Error::Store`] when the storage fails and with [`Error::HistoryCorrupt`] or
    /// [`Error::HistoryInvalid`] for a damaged history file. A target timeline without a history
    /// file gives an empty sequence.
    pub async fn start<S: ArchiveStore>(
        store: &S,
        descriptor: &RepoDescriptor,
        first: SegmentName,
        target: Option<TimelineId>,
        cancel: &CancellationToken,
    ) -> Result<WalFollower, Error> {
        let size = descriptor.wal_segment_size;
        let mut histories = Vec::new();
        if first.tli() != TimelineId::FIRST
            && let Some(h) = history(store, first.tli(), cancel).await?
        {
            histories.push(h);
        }
        // The timelines after the first segment's, as far as their history files go.
        let mut probe = first.tli().next();
        while let Some(tli) = probe {
            let Some(h) = history(store, tli, cancel).await? else {
                break;
            };
            histories.push(h);
            probe = tli.next();
        }
        if let Some(target) = target
            && target != TimelineId::FIRST
            && !histories.iter().any(|h| h.timeline() == target)
            && let Some(h) = history(store, target, cancel).await?
        {
            histories.push(h);
        }
        let graph = TimelineGraph::new(histories);
        let segno = first.segno(size).ok();
        // The segment's last byte: the segment holding a switch point belongs to the new
        // timeline's stretch from the switch point on.
        let last_byte = first
            .start_lsn(size)
            .ok()
            .and_then(|lsn| lsn.checked_add(size.bytes() - 1));
        let target = target
            .or_else(|| last_byte.and_then(|lsn| graph.newest_reachable(first.tli(), lsn)))
            .unwrap_or(first.tli());
        let mut later = Vec::new();
        let mut probe = target.next();
        while let Some(tli) = probe.filter(|tli| graph.contains(*tli)) {
            later.push(tli);
            probe = tli.next();
        }
        let path = graph.path(target);
        let on_path = path
            .as_ref()
            .zip(segno)
            .is_some_and(|(path, segno)| path.timeline_for_segment(segno, size) == first.tli());
        Ok(WalFollower {
            segment_size: size,
            target_history: target != TimelineId::FIRST && path.is_some(),
            path: path.unwrap_or_else(|| {
                TimelinePath::of(
                    &TimelineHistory::new(TimelineId::FIRST, Vec::new())
                        .expect("an empty history is valid"),
                )
            }),
            later,
            next: segno.filter(|_| on_path),
            listed: None,
        })
    }

    /// The timeline followed.
    pub fn target(&self) -> TimelineId {
        self.path.target()
    }

    /// The history file of the target timeline, which PostgreSQL reads first, when there is
    /// one (timeline 1 has none).
    pub fn target_history(&self) -> Option<TimelineId> {
        self.target_history.then(|| self.target())
    }

    /// The timelines after the target that have a history file, in order: PostgreSQL asks for
    /// their history files when it picks a new timeline at promotion.
    pub fn later_timelines(&self) -> &[TimelineId] {
        &self.later
    }

    /// The next segment and its stored size, or `None` once the archived WAL on the path
    /// ends. Lists a `wal/<TLI><LOG>/` prefix when the sequence enters it.
    pub async fn next<S: ArchiveStore>(
        &mut self,
        store: &S,
        cancel: &CancellationToken,
    ) -> Result<Option<(SegmentName, u64)>, Error> {
        let Some(segno) = self.next else {
            return Ok(None);
        };
        let size = self.segment_size;
        let tli = self.path.timeline_for_segment(segno, size);
        let Ok(name) = SegmentName::new(tli, segno, size) else {
            self.next = None;
            return Ok(None);
        };
        let dir = name.log_dir();
        if self
            .listed
            .as_ref()
            .is_none_or(|(listed, _)| *listed != dir)
        {
            let mut sizes = BTreeMap::new();
            for meta in store
                .list(&format!("{}{dir}/", layout::WAL_PREFIX), cancel)
                .await?
            {
                if let Some(WalFileName::Segment(seg)) = layout::parse_wal_key(&meta.key)
                    && seg.tli() == tli
                    && let Ok(n) = seg.segno(size)
                {
                    sizes.insert(n, meta.size);
                }
            }
            self.listed = Some((dir, sizes));
        }
        let stored = self
            .listed
            .as_ref()
            .and_then(|(_, sizes)| sizes.get(&segno).copied());
        match stored {
            Some(stored) => {
                self.next = segno.next();
                Ok(Some((name, stored)))
            }
            None => {
                self.next = None;
                Ok(None)
            }
        }
    }
}

/// The history file of `tli`, or `None` when the archive has none.
async fn history<S: ArchiveStore>(
    store: &S,
    tli: TimelineId,
    cancel: &CancellationToken,
) -> Result<Option<TimelineHistory>, Error> {
    let key: ObjectKey = layout::wal_key(&WalFileName::History(tli));
    match load_history(store, tli, &key, cancel).await {
        Ok(h) => Ok(Some(h)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use walferry_store::{MemoryStore, PutMode};
    use walferry_wal::{Lsn, PgVersion};

    use super::*;
    use crate::descriptor::ClusterIdentity;

    const SIZE: WalSegSize = WalSegSize::DEFAULT;

    fn tli(n: u32) -> TimelineId {
        TimelineId::new(n).unwrap()
    }

    fn seg(t: u32, n: u64) -> SegmentName {
        SegmentName::new(tli(t), SegNo(n), SIZE).unwrap()
    }

    /// An LSN inside segment `segno`.
    fn at(segno: u64, offset: u64) -> Lsn {
        Lsn((segno << 24) + offset)
    }

    async fn put(store: &MemoryStore, key: &ObjectKey, body: Vec<u8>) {
        store
            .put(
                key,
                Bytes::from(body),
                PutMode::Create,
                &CancellationToken::new(),
            )
            .await
            .unwrap();
    }

    /// As in the planner's `a_timeline_switch` test: timeline 2 branched from 1 in segment 5;
    /// timeline 1 went on to segment 8, timeline 2 holds 5 to 9; timeline 3 branched from 2
    /// in segment 8 and holds 8 and 9, with 10 missing and 11 archived. Segment `n` of
    /// timeline `t` is stored in `100 t + n` bytes.
    async fn repository() -> (MemoryStore, RepoDescriptor) {
        let store = MemoryStore::new();
        let descriptor = RepoDescriptor::new(ClusterIdentity {
            system_identifier: 42,
            pg_version: PgVersion::from_major(15).unwrap(),
            wal_segment_size: SIZE,
        });
        let segments = [(1u32, 1..=8u64), (2, 5..=9), (3, 8..=9), (3, 11..=11)];
        for (t, range) in segments {
            for n in range {
                let key = layout::wal_key(&WalFileName::Segment(seg(t, n)));
                put(
                    &store,
                    &key,
                    vec![0; usize::try_from(100 * u64::from(t) + n).unwrap()],
                )
                .await;
            }
        }
        let histories = [
            (2, vec![(1, at(5, 0x80_0000))]),
            (3, vec![(1, at(5, 0x80_0000)), (2, at(8, 0x10))]),
        ];
        for (t, entries) in histories {
            let entries = entries
                .into_iter()
                .map(|(parent, switch_point)| walferry_wal::HistoryEntry {
                    parent: tli(parent),
                    switch_point,
                    reason: "test".into(),
                })
                .collect();
            let text = TimelineHistory::new(tli(t), entries).unwrap().to_text();
            let key = layout::wal_key(&WalFileName::History(tli(t)));
            put(
                &store,
                &key,
                walferry_codec::encode(text.as_bytes(), 3).unwrap(),
            )
            .await;
        }
        (store, descriptor)
    }

    /// The follower's whole sequence as (timeline, segment, stored size), with its target and
    /// the later timelines.
    async fn follow(
        target: Option<u32>,
        first: SegmentName,
    ) -> (Vec<(u32, u64, u64)>, u32, Vec<u32>) {
        let (store, descriptor) = repository().await;
        let cancel = CancellationToken::new();
        let mut f = WalFollower::start(&store, &descriptor, first, target.map(tli), &cancel)
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Some((name, stored)) = f.next(&store, &cancel).await.unwrap() {
            out.push((name.tli().get(), name.segno(SIZE).unwrap().0, stored));
        }
        assert!(
            f.next(&store, &cancel).await.unwrap().is_none(),
            "it stays ended"
        );
        let later = f.later_timelines().iter().map(|t| t.get()).collect();
        (out, f.target().get(), later)
    }

    fn run(t: u32, range: std::ops::RangeInclusive<u64>) -> Vec<(u32, u64, u64)> {
        range.map(|n| (t, n, 100 * u64::from(t) + n)).collect()
    }

    #[tokio::test]
    async fn follows_the_newest_timeline_across_switches() {
        let (segments, target, later) = follow(None, seg(1, 3)).await;
        let mut expected = run(1, 3..=4);
        expected.extend(run(2, 5..=7));
        expected.extend(run(3, 8..=9));
        assert_eq!(segments, expected);
        assert_eq!((target, later), (3, vec![]));
    }

    #[tokio::test]
    async fn follows_an_explicit_timeline() {
        let (segments, target, later) = follow(Some(1), seg(1, 3)).await;
        assert_eq!(segments, run(1, 3..=8));
        assert_eq!((target, later), (1, vec![2, 3]));

        let (segments, target, later) = follow(Some(2), seg(1, 4)).await;
        let mut expected = run(1, 4..=4);
        expected.extend(run(2, 5..=9));
        assert_eq!(segments, expected);
        assert_eq!((target, later), (2, vec![3]));
    }

    #[tokio::test]
    async fn starts_from_the_switch_segment_of_the_new_timeline() {
        let (segments, _, _) = follow(None, seg(2, 5)).await;
        let mut expected = run(2, 5..=7);
        expected.extend(run(3, 8..=9));
        assert_eq!(segments, expected);
        // Timeline 1's copy of the switch segment is not what timeline 2's path reads.
        assert_eq!(follow(Some(2), seg(1, 5)).await.0, []);
    }

    #[tokio::test]
    async fn beyond_the_archive_or_an_unknown_timeline_is_empty() {
        assert_eq!(follow(None, seg(3, 10)).await.0, []);
        assert_eq!(follow(Some(7), seg(1, 3)).await.0, []);
    }

    #[tokio::test]
    async fn lists_one_log_directory_at_a_time() {
        // Segments 0xFE to 0x101 of timeline 1 span two `<TLI><LOG>` directories.
        let store = MemoryStore::new();
        let descriptor = RepoDescriptor::new(ClusterIdentity {
            system_identifier: 42,
            pg_version: PgVersion::from_major(15).unwrap(),
            wal_segment_size: SIZE,
        });
        for n in 0xFE..=0x101u64 {
            let key = layout::wal_key(&WalFileName::Segment(seg(1, n)));
            put(&store, &key, vec![0; 7]).await;
        }
        let cancel = CancellationToken::new();
        let mut f = WalFollower::start(&store, &descriptor, seg(1, 0xFE), None, &cancel)
            .await
            .unwrap();
        let mut names = Vec::new();
        while let Some((name, _)) = f.next(&store, &cancel).await.unwrap() {
            names.push(name.to_string());
        }
        assert_eq!(
            names,
            [
                "0000000100000000000000FE",
                "0000000100000000000000FF",
                "000000010000000100000000",
                "000000010000000100000001"
            ]
        );
        assert_eq!(f.target_history(), None);
    }
}
