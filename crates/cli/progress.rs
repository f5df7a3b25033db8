//! Progress of a restore: one line redrawn in place on a terminal, plain log lines otherwise.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use walferry_engine::restore::{ProgressSnapshot, UnpackProgress};

/// Bytes in binary units with one decimal: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration as `0.4 s`, `42.0 s`, `3 min 20 s` or `2 h 05 min`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => format!("{:.1} s", d.as_secs_f64()),
        60..3600 => format!("{} min {:02} s", secs / 60, secs % 60),
        _ => format!("{} h {:02} min", secs / 3600, secs % 3600 / 60),
    }
}

/// The progress line for `now`, `elapsed` after the unpack started.
pub fn describe(now: &ProgressSnapshot, elapsed: Duration) -> String {
    let mut line = String::new();
    if now.total_bytes > 0 && now.written_bytes >= now.total_bytes && now.checked_files > 0 {
        let _ = write!(
            line,
            "checking: {} of {} files read back and verified",
            now.checked_files, now.total_files
        );
        return line;
    }
    let percent = if now.total_bytes == 0 {
        0.0
    } else {
        now.written_bytes as f64 * 100.0 / now.total_bytes as f64
    };
    let _ = write!(
        line,
        "restoring: {} of {} ({percent:.0}%), {} of {} files",
        human_bytes(now.written_bytes),
        human_bytes(now.total_bytes),
        now.written_files,
        now.total_files
    );
    let secs = elapsed.as_secs_f64();
    if secs >= 1.0 && now.written_bytes > 0 {
        let rate = now.written_bytes as f64 / secs;
        let _ = write!(line, ", {}/s", human_bytes(rate as u64));
        let left = now.total_bytes.saturating_sub(now.written_bytes) as f64 / rate;
        if left.is_finite() {
            let _ = write!(
                line,
                ", about {} left",
                human_duration(Duration::from_secs_f64(left))
            );
        }
    }
    line
}

/// Shows the progress of `progress` until [`Reporter::finish`]: every half second in place
/// on a terminal (stderr), every 10 seconds as a log line otherwise.
#[derive(Debug)]
pub struct Reporter {
    task: tokio::task::JoinHandle<()>,
    terminal: bool,
}

impl Reporter {
    /// Starts reporting; call from within a tokio runtime.
    pub fn start(progress: Arc<UnpackProgress>) -> Reporter {
        let terminal = std::io::stderr().is_terminal();
        let period = if terminal {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        };
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let line = describe(&progress.snapshot(), started.elapsed());
                if terminal {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[K{line}");
                    let _ = err.flush();
                } else {
                    tracing::info!("{line}");
                }
            }
        });
        Reporter { task, terminal }
    }

    /// Stops reporting and clears the terminal line.
    pub fn finish(self) {
        self.task.abort();
        if self.terminal {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_duration(Duration::from_millis(420)), "0.4 s");
        assert_eq!(human_duration(Duration::from_secs(42)), "42.0 s");
        assert_eq!(human_duration(Duration::from_secs(200)), "3 min 20 s");
        assert_eq!(human_duration(Duration::from_secs(7500)), "2 h 05 min");
    }

    #[test]
    fn lines_show_bytes_files_rate_and_time_left() {
        let now = ProgressSnapshot {
            total_bytes: 4 << 30,
            total_files: 1000,
            written_bytes: 1 << 30,
            written_files: 250,
            checked_files: 0,
        };
        assert_eq!(
            describe(&now, Duration::from_secs(10)),
            "restoring: 1.0 GiB of 4.0 GiB (25%), 250 of 1000 files, 102.4 MiB/s, about 30.0 s left"
        );
        let checking = ProgressSnapshot {
            written_bytes: 4 << 30,
            checked_files: 10,
            ..now
        };
        assert_eq!(
            describe(&checking, Duration::from_secs(40)),
            "checking: 10 of 1000 files read back and verified"
        );
    }
}
