//! The names of the parties: a counterpart's id names its box, its receipts and its routes; an
//! account's id is what logs in. Both are checked once, when the config is read, so that a
//! value of either type is a safe folder name and cannot be passed where the other is meant
//! (`DropBox::open(account, owner)` does not compile with its arguments swapped).

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What an id may be: 1–64 of `a-z 0-9 . _ -`, starting with a letter or digit — a folder name
/// on any file system, never `.` or `..`, the same in logs, receipts and paths.
fn check(id: &str) -> Result<(), IdError> {
    let b = id.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(IdError(id.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid id: use 1-64 of a-z 0-9 . _ - starting with a letter or digit")]
pub struct IdError(String);

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn new(id: &str) -> Result<$name, IdError> {
                check(id)?;
                Ok($name(id.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(id: String) -> Result<$name, IdError> {
                check(&id)?;
                Ok($name(id))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(id: &str) -> Result<$name, IdError> {
                $name::new(id)
            }
        }

        /// As the string, so logs and messages read the same as before the type.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// Read as the string it is wherever a `&str` is taken (lookups, logs, paths); the
        /// other way round needs the check of [`Self::new`].
        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
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
    };
}

id_type! {
    /// A clinic or an insurer: the owner of a box.
    CounterpartId
}

id_type! {
    /// An identity that logs in: a counterpart (whose account id is its counterpart id), a
    /// maintainer, the break-glass account or the NOC.
    AccountId
}

impl CounterpartId {
    /// The account a counterpart logs in as.
    pub fn account(&self) -> AccountId {
        AccountId(self.0.clone())
    }
}

/// Whether the account is the counterpart itself (and not a maintainer acting in its box).
impl PartialEq<CounterpartId> for AccountId {
    fn eq(&self, other: &CounterpartId) -> bool {
        self.0 == other.0
    }
}

impl AccountId {
    /// The counterpart of the same id, if this account is one (the caller knows from its role).
    pub fn as_counterpart(&self) -> CounterpartId {
        CounterpartId(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_safe_folder_names() {
        for ok in ["clinic-1312345679", "m.sato", "0a", "a_b"] {
            assert_eq!(CounterpartId::new(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            ".",
            "..",
            "-a",
            "A",
            "a b",
            "a/b",
            "ａ",
            &"a".repeat(65),
        ] {
            assert!(CounterpartId::new(bad).is_err(), "{bad:?}");
            assert!(AccountId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_read_from_toml_are_checked() {
        #[derive(Deserialize)]
        struct T {
            id: CounterpartId,
        }
        assert_eq!(toml::from_str::<T>("id = \"c-1\"").unwrap().id, "c-1");
        let e = toml::from_str::<T>("id = \"C 1\"").err().unwrap();
        assert!(e.to_string().contains("not a valid id"), "{e}");
    }
}
