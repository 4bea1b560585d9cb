//! The identifiers of the checkup exchange: the 10-digit institution number of a clinic and the
//! 8-digit insurer number. Config validation and the archive validator both read numbers through
//! this module, so the two can never disagree on what a well-formed number is.

use std::fmt;

/// Which kind of number, and therefore which length and check-digit rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberKind {
    /// 機関番号: 2-digit prefecture, 1-digit category, 7-digit code ending in a check digit.
    Institution,
    /// 保険者番号: 2-digit law code, 2-digit prefecture, 3-digit insurer, 1 check digit.
    Insurer,
}

impl NumberKind {
    pub fn digits(self) -> usize {
        match self {
            NumberKind::Institution => 10,
            NumberKind::Insurer => 8,
        }
    }

    /// The digits the check digit is computed over: every digit before it, for both kinds
    /// (MHLW 保険者番号設定要領 for insurers; the 医療機関コード rule for institutions, which
    /// covers the prefecture and category digits too).
    fn checked_range(self) -> std::ops::Range<usize> {
        0..self.digits() - 1
    }
}

impl fmt::Display for NumberKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NumberKind::Institution => "institution number",
            NumberKind::Insurer => "insurer number",
        })
    }
}

/// Why a number is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("{kind} must be exactly {} ASCII digits, got {got:?}", kind.digits())]
    Shape { kind: NumberKind, got: String },
    #[error("{kind} {got} has check digit {found}, expected {expected}")]
    CheckDigit {
        kind: NumberKind,
        got: String,
        found: u8,
        expected: u8,
    },
}

/// Checks length and digits only.
pub fn check_shape(kind: NumberKind, s: &str) -> Result<(), NumberError> {
    if s.len() == kind.digits() && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(NumberError::Shape {
            kind,
            got: s.to_owned(),
        })
    }
}

/// Checks length, digits and the Luhn-style check digit.
pub fn check(kind: NumberKind, s: &str) -> Result<(), NumberError> {
    check_shape(kind, s)?;
    let digits = s.as_bytes();
    let expected = check_digit(&digits[kind.checked_range()]);
    let found = digits[kind.digits() - 1] - b'0';
    if found == expected {
        Ok(())
    } else {
        Err(NumberError::CheckDigit {
            kind,
            got: s.to_owned(),
            found,
            expected,
        })
    }
}

/// The check digit over ASCII digits: weights 2,1,2,… from the rightmost digit, the digits of
/// each product summed, and `(10 - sum mod 10) mod 10`.
pub fn check_digit(ascii_digits: &[u8]) -> u8 {
    let sum: u32 = ascii_digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            let p = if i % 2 == 0 { d * 2 } else { d };
            p / 10 + p % 10
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digit_follows_the_luhn_scheme() {
        // 7992739871 is the textbook Luhn example with check digit 3.
        assert_eq!(check_digit(b"7992739871"), 3);
        assert_eq!(check_digit(b"000000"), 0);
    }

    #[test]
    fn insurer_number_with_right_check_digit_passes() {
        let body = b"0613001";
        let n = format!("0613001{}", check_digit(body));
        assert_eq!(check(NumberKind::Insurer, &n), Ok(()));
    }

    #[test]
    fn wrong_check_digit_is_named() {
        let good = check_digit(b"0613001");
        let bad = format!("0613001{}", (good + 1) % 10);
        assert!(matches!(
            check(NumberKind::Insurer, &bad),
            Err(NumberError::CheckDigit { .. })
        ));
    }

    #[test]
    fn institution_check_digit_covers_all_ten_digits() {
        // Published institution numbers whose last digit is the Luhn digit over the other nine.
        for n in ["0110113719", "5521111111", "6631111116", "1312345679"] {
            assert_eq!(check(NumberKind::Institution, n), Ok(()), "{n}");
        }
        // Computed over the 7-digit code only, 1312345676 looked right; over all ten it is not.
        assert!(matches!(
            check(NumberKind::Institution, "1312345676"),
            Err(NumberError::CheckDigit { expected: 9, .. })
        ));
    }

    #[test]
    fn insurer_numbers_of_the_published_examples_pass() {
        for n in [
            "33120015", "00280081", "06139463", "01130012", "06132013", "92899020", "00263129",
        ] {
            assert_eq!(check(NumberKind::Insurer, n), Ok(()), "{n}");
        }
    }

    #[test]
    fn shape_errors() {
        assert!(check_shape(NumberKind::Insurer, "1234567").is_err());
        assert!(check_shape(NumberKind::Insurer, "1234567a").is_err());
        assert!(check_shape(NumberKind::Institution, "１２３４５６７８９０").is_err());
        assert!(check_shape(NumberKind::Institution, "1310000001").is_ok());
    }
}
