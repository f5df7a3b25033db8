//! Checking a stored base-backup part against its manifest entry, shared by everything that
//! reads parts back (`restore::unpack` writes them out, `verify` only checks them).
//!
//! A part is good when its frame decodes with verification (walferry-codec checks its own
//! length and CRC-32) and the decoded content has the size and CRC-32 the manifest records.

use std::io::{self, Read};

use walferry_codec::{Decoder, Summary};
use walferry_manifest::backup::{BackupPart, Crc32};

use crate::error::{Error, Result};

/// How the decoded content `found` differs from what the manifest records for `part`, or
/// `None` when it matches. The text is lowercase, for [`Error::PartMismatch`]'s `reason`.
pub(crate) fn part_mismatch(part: &BackupPart, found: Summary) -> Option<String> {
    if found.len != part.original_bytes {
        return Some(format!(
            "it holds {} bytes, the manifest says {}",
            found.len, part.original_bytes
        ));
    }
    let crc = Crc32(found.crc32);
    if crc != part.crc32 {
        return Some(format!(
            "its CRC-32 is {crc}, the manifest says {}",
            part.crc32
        ));
    }
    None
}

/// Decodes the stored part `body` (at `key`) without keeping its content, and checks it
/// against `part`: [`Error::Corrupt`] when the frame is damaged, [`Error::PartMismatch`] when
/// it decodes to other content than the manifest records. Memory: the decoder's buffers only.
pub(crate) fn scan_part(key: &str, part: &BackupPart, body: &[u8]) -> Result<()> {
    let corrupt = |source| Error::Corrupt {
        key: key.to_owned(),
        source,
    };
    let mut decoder = Decoder::with_limit(body, part.original_bytes).map_err(corrupt)?;
    io::copy(&mut decoder.by_ref(), &mut io::sink()).map_err(|e| corrupt(e.into()))?;
    let found = decoder.finish().map_err(corrupt)?;
    match part_mismatch(part, found) {
        None => Ok(()),
        Some(reason) => Err(Error::PartMismatch {
            key: key.to_owned(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(content: &[u8]) -> BackupPart {
        BackupPart {
            tablespace: None,
            name: "base.tar.0000.zst".into(),
            offset: 0,
            original_bytes: content.len() as u64,
            compressed_bytes: 0,
            crc32: Crc32(crc32fast::hash(content)),
        }
    }

    #[test]
    fn accepts_the_recorded_part_and_names_what_differs() {
        let content = b"tar bytes of a base backup".repeat(100);
        let body = walferry_codec::encode(&content, 3).unwrap();
        scan_part("backups/b/base.tar.0000.zst", &part(&content), &body).unwrap();

        let mut other = part(&content);
        other.crc32 = Crc32(1);
        let err = scan_part("backups/b/base.tar.0000.zst", &other, &body).unwrap_err();
        assert!(matches!(err, Error::PartMismatch { .. }), "{err:?}");
        assert!(err.to_string().contains("its CRC-32 is"), "{err}");

        // Shorter than recorded: the limit is the recorded size, so a longer one is corrupt
        // and a shorter one a mismatch.
        let mut longer = part(&content);
        longer.original_bytes += 1;
        let err = scan_part("k", &longer, &body).unwrap_err();
        assert!(err.to_string().contains("holds 2600 bytes"), "{err}");

        let mut damaged = body.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0x40;
        let err = scan_part("k", &part(&content), &damaged).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    }
}
