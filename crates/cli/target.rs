//! The recovery target options shared by `restore` and `estimate`.

use walferry_manifest::{RecoveryTarget, RestoreRequest, TargetTimeline, Timestamp};
use walferry_wal::{Lsn, TimelineId};

/// Where recovery stops, on which timeline, from which backup: PostgreSQL's
/// `recovery_target*` settings as options. No target means the end of the archive.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("target").multiple(false)))]
pub struct TargetArgs {
    /// Stop at this time: the first commit after it (ISO 8601, e.g. '2026-11-25 05:00:00+00')
    #[arg(long, value_name = "TIME", group = "target", value_parser = parse_time)]
    pub target_time: Option<Timestamp>,

    /// Stop at this WAL position (e.g. 0/3000028)
    #[arg(long, value_name = "LSN", group = "target", value_parser = parse_lsn)]
    pub target_lsn: Option<Lsn>,

    /// Stop at the commit of this transaction id
    #[arg(long, value_name = "XID", group = "target")]
    pub target_xid: Option<u64>,

    /// Stop at this restore point (pg_create_restore_point)
    #[arg(long, value_name = "NAME", group = "target")]
    pub target_name: Option<String>,

    /// Stop as soon as the backup is consistent
    #[arg(long, group = "target")]
    pub target_immediate: bool,

    /// Stop just before the target rather than just after it (recovery_target_inclusive = off)
    #[arg(long)]
    pub target_exclusive: bool,

    /// The timeline to follow: latest, current (the backup's) or a number
    #[arg(long, value_name = "TIMELINE", default_value = "latest", value_parser = parse_timeline)]
    pub target_timeline: TargetTimeline,

    /// Restore this backup rather than the newest one that reaches the target
    #[arg(long, value_name = "LABEL")]
    pub backup: Option<String>,
}

impl TargetArgs {
    /// The planner's request.
    pub fn request(&self) -> RestoreRequest {
        let target = if let Some(time) = self.target_time {
            RecoveryTarget::Time(time)
        } else if let Some(lsn) = self.target_lsn {
            RecoveryTarget::Lsn(lsn)
        } else if let Some(xid) = self.target_xid {
            RecoveryTarget::Xid(xid)
        } else if let Some(name) = &self.target_name {
            RecoveryTarget::Name(name.clone())
        } else if self.target_immediate {
            RecoveryTarget::Immediate
        } else {
            RecoveryTarget::EndOfArchive
        };
        RestoreRequest {
            target,
            inclusive: !self.target_exclusive,
            timeline: self.target_timeline,
            backup: self.backup.clone(),
        }
    }
}

fn parse_time(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse(text).map_err(|e| e.to_string())
}

fn parse_lsn(text: &str) -> Result<Lsn, String> {
    text.parse::<Lsn>().map_err(|e| e.to_string())
}

fn parse_timeline(text: &str) -> Result<TargetTimeline, String> {
    match text {
        "latest" => Ok(TargetTimeline::Latest),
        "current" => Ok(TargetTimeline::Current),
        n => n
            .parse::<u32>()
            .ok()
            .and_then(|n| TimelineId::new(n).ok())
            .map(TargetTimeline::Id)
            .ok_or_else(|| format!("'{n}' is not latest, current or a timeline number")),
    }
}
