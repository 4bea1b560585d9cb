//! The identifiers of the checkup exchange: the 10-digit institution number of a clinic and the
//! 8-digit insurer number. Config validation and the archive validator both read numbers through
//! this module, so the two can never disagree on what a well-formed number is.
//!
//! [`InsurerNumber`] and [`InstitutionNumber`] can only be made by checking shape and check
//! digit: code that holds one holds a valid number, and the two kinds cannot be mixed up.

use std::fmt;
use std::str::FromStr;

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
    /// Neither length: the kind of number cannot be told.
    #[error(
        "a number must be exactly 8 ASCII digits (insurer number) or exactly 10 (institution number), got {got:?}"
    )]
    Length { got: String },
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

/// The two kinds of number as one type, with the code of each shared.
macro_rules! number_type {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const KIND: NumberKind = $kind;

            /// The number, if `s` has the right shape and check digit.
            pub fn parse(s: &str) -> Result<Self, NumberError> {
                check(Self::KIND, s)?;
                Ok($name(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NumberError;
            fn from_str(s: &str) -> Result<Self, NumberError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s: String = serde::Deserialize::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

number_type!(
    /// A 保険者番号 whose shape and check digit were checked: the routing of files by insurer
    /// only ever sees numbers that exist in the exchange.
    InsurerNumber,
    NumberKind::Insurer
);

number_type!(
    /// A 機関番号 whose shape and check digit were checked, so a clinic's number can be compared
    /// and looked up without being checked again.
    InstitutionNumber,
    NumberKind::Institution
);

/// A 代行機関番号 (agency number): 8 digits. Its check-digit rule is unconfirmed, so only the
/// shape is proved; a type of its own keeps it from passing for an insurer number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgencyNumber(String);

impl AgencyNumber {
    pub fn parse(s: &str) -> Result<AgencyNumber, String> {
        if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(AgencyNumber(s.to_owned()))
        } else {
            Err(format!("the agency number must be 8 digits, got {s:?}"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgencyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl PartialEq<str> for AgencyNumber {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl<'de> serde::Deserialize<'de> for AgencyNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        AgencyNumber::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A checked number of either kind: what a counterpart is identified by. The kind is told by
/// the length (8 digits insurer, 10 institution), as the exchange itself does. The agency's
/// own number only identifies the account its sorted archives are checked as.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Number {
    Institution(InstitutionNumber),
    Insurer(InsurerNumber),
    Agency(AgencyNumber),
}

impl Number {
    /// A number of the given kind.
    pub fn parse(kind: NumberKind, s: &str) -> Result<Number, NumberError> {
        Ok(match kind {
            NumberKind::Institution => Number::Institution(InstitutionNumber::parse(s)?),
            NumberKind::Insurer => Number::Insurer(InsurerNumber::parse(s)?),
        })
    }

    /// A number of the kind its length says.
    pub fn parse_any(s: &str) -> Result<Number, NumberError> {
        if s.len() == NumberKind::Institution.digits() {
            Number::parse(NumberKind::Institution, s)
        } else if s.len() == NumberKind::Insurer.digits() {
            Number::parse(NumberKind::Insurer, s)
        } else {
            Err(NumberError::Length { got: s.to_owned() })
        }
    }

    pub fn kind(&self) -> NumberKind {
        match self {
            Number::Institution(_) => NumberKind::Institution,
            // The agency sends as insurers do, with a number of the same length.
            Number::Insurer(_) | Number::Agency(_) => NumberKind::Insurer,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Number::Institution(n) => n.as_str(),
            Number::Insurer(n) => n.as_str(),
            Number::Agency(n) => n.as_str(),
        }
    }

    /// The insurer number, if it is one.
    pub fn insurer(&self) -> Option<&InsurerNumber> {
        match self {
            Number::Insurer(n) => Some(n),
            Number::Institution(_) | Number::Agency(_) => None,
        }
    }
}

impl From<InsurerNumber> for Number {
    fn from(n: InsurerNumber) -> Number {
        Number::Insurer(n)
    }
}

impl From<InstitutionNumber> for Number {
    fn from(n: InstitutionNumber) -> Number {
        Number::Institution(n)
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl PartialEq<str> for Number {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Number {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for Number {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Number {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        Number::parse_any(&s).map_err(serde::de::Error::custom)
    }
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

    #[test]
    fn typed_numbers_exist_only_when_valid() {
        let n = InsurerNumber::parse("06139463").expect("valid insurer number");
        assert_eq!(n.as_str(), "06139463");
        assert_eq!(n.to_string(), "06139463");
        assert!(matches!(
            InsurerNumber::parse("06139464"),
            Err(NumberError::CheckDigit { expected: 3, .. })
        ));
        assert!(matches!(
            InsurerNumber::parse("0613946"),
            Err(NumberError::Shape { .. })
        ));
        // An institution number is not an insurer number, however valid.
        assert!(InsurerNumber::parse("1312345679").is_err());
        assert!(InstitutionNumber::parse("1312345679").is_ok());
        assert!(matches!(
            InstitutionNumber::parse("1312345676"),
            Err(NumberError::CheckDigit {
                found: 6,
                expected: 9,
                ..
            })
        ));
        assert!("0110113719".parse::<InstitutionNumber>().is_ok());
    }

    #[test]
    fn either_number_is_told_by_its_length() {
        assert_eq!(
            Number::parse_any("1312345679").map(|n| n.kind()),
            Ok(NumberKind::Institution)
        );
        assert_eq!(
            Number::parse_any("06139463").map(|n| n.kind()),
            Ok(NumberKind::Insurer)
        );
        let e = Number::parse_any("0613001").unwrap_err();
        assert!(matches!(e, NumberError::Length { .. }));
        assert!(e.to_string().contains("exactly 8 ASCII digits"), "{e}");
        assert!(Number::parse_any("0613946a").is_err());
        // The agency number's check digit is not known: only its shape is checked.
        assert!(AgencyNumber::parse("12345678").is_ok());
        assert!(AgencyNumber::parse("1234567").is_err());
    }

    #[test]
    fn numbers_serialise_as_their_digits() {
        let n: Number = serde_json::from_str("\"06139463\"").expect("valid");
        assert_eq!(
            serde_json::to_string(&n).ok().as_deref(),
            Some("\"06139463\"")
        );
        let e = serde_json::from_str::<InsurerNumber>("\"06139464\"").unwrap_err();
        assert!(e.to_string().contains("check digit 4, expected 3"), "{e}");
    }
}
