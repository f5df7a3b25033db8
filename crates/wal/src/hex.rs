//! Hexadecimal digits, parsed strictly: no sign, no `0x`, no whitespace.

/// Which letter case a parser accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Case {
    /// `A`-`F` only, as in PostgreSQL's file names (`IsXLogFileName()`).
    Upper,
    /// `a`-`f` and `A`-`F`, as in PostgreSQL's `pg_lsn` input.
    Any,
}

/// Why a run of digits was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HexError {
    /// No digits at all.
    Empty,
    /// More than eight digits: the value would not fit in 32 bits.
    TooLong,
    /// A lower-case digit where only upper case is accepted.
    LowerCase,
    /// A byte that is not a hexadecimal digit.
    NotHex,
}

/// Parses one to eight hexadecimal digits into a `u32`.
pub(crate) fn parse_u32(digits: &[u8], case: Case) -> Result<u32, HexError> {
    if digits.is_empty() {
        return Err(HexError::Empty);
    }
    if digits.len() > 8 {
        return Err(HexError::TooLong);
    }
    // Report a non-hex byte in preference to a lower-case one: "0000000g" is not hex at all.
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(HexError::NotHex);
    }
    let mut value = 0u32;
    for &byte in digits {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'A'..=b'F' => byte - b'A' + 10,
            b'a'..=b'f' if case == Case::Any => byte - b'a' + 10,
            b'a'..=b'f' => return Err(HexError::LowerCase),
            _ => return Err(HexError::NotHex),
        };
        // At most eight digits, so the value never exceeds 32 bits.
        value = (value << 4) | u32::from(digit);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let cases: &[(&str, Case, Result<u32, HexError>)] = &[
            ("0", Case::Upper, Ok(0)),
            ("FFFFFFFF", Case::Upper, Ok(u32::MAX)),
            ("ffffffff", Case::Any, Ok(u32::MAX)),
            ("16B3748", Case::Upper, Ok(0x16B_3748)),
            ("00000001", Case::Upper, Ok(1)),
            ("", Case::Any, Err(HexError::Empty)),
            ("100000000", Case::Any, Err(HexError::TooLong)),
            ("abc", Case::Upper, Err(HexError::LowerCase)),
            ("0000000g", Case::Upper, Err(HexError::NotHex)),
            ("+1", Case::Any, Err(HexError::NotHex)),
            ("-1", Case::Any, Err(HexError::NotHex)),
            (" 1", Case::Any, Err(HexError::NotHex)),
            ("0x1", Case::Any, Err(HexError::NotHex)),
            ("é", Case::Any, Err(HexError::NotHex)),
        ];
        for (input, case, expected) in cases {
            assert_eq!(
                parse_u32(input.as_bytes(), *case),
                *expected,
                "input {input:?}"
            );
        }
    }
}
