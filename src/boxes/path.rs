//! Virtual paths of the box view (`/inbox/name`), checked as names, never as file-system paths.
//!
//! A path is reduced to at most a folder and one file name; anything that could name something
//! else (`..`, NUL, a name with a slash, hidden names, over-long names, non-UTF-8) is refused
//! here, and [`super::DropBox`] then opens the name beneath the box's directory handle with
//! symlinks refused, so no string trick reaches outside the box.

use std::fmt;

use super::BoxError;

/// The three folders every counterpart sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Folder {
    /// Write-only: files the counterpart sends.
    Inbox,
    /// Files for the counterpart; reading to the end is "retrieved", deleting acknowledges.
    Outbox,
    /// Read-only: receipts of files it sent or received.
    Receipts,
}

impl Folder {
    pub const ALL: [Folder; 3] = [Folder::Inbox, Folder::Outbox, Folder::Receipts];

    pub fn as_str(self) -> &'static str {
        match self {
            Folder::Inbox => "inbox",
            Folder::Outbox => "outbox",
            Folder::Receipts => "receipts",
        }
    }

    pub fn from_name(s: &str) -> Option<Folder> {
        Folder::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

impl fmt::Display for Folder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest file name accepted, in bytes, as on common file systems.
pub const MAX_NAME_BYTES: usize = 255;

/// A file name that is safe to use as one directory entry of a box folder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileName(String);

impl FileName {
    pub fn new(name: &str) -> Result<FileName, BoxError> {
        let refuse = |why: &'static str| Err(BoxError::BadName { why });
        if name.is_empty() {
            return refuse("empty name");
        }
        if name.len() > MAX_NAME_BYTES {
            return refuse("name longer than 255 bytes");
        }
        if name.contains('\0') {
            return refuse("NUL byte in name");
        }
        if name.contains('/') || name.contains('\\') {
            return refuse("slash in name");
        }
        if name.starts_with('.') {
            return refuse("names starting with '.' are not allowed");
        }
        if name.chars().any(char::is_control) {
            return refuse("control character in name");
        }
        Ok(FileName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a virtual path points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtualPath {
    /// `/`: lists the three folders.
    Root,
    Folder(Folder),
    File(Folder, FileName),
}

impl VirtualPath {
    /// Parses an absolute or root-relative path as a client sends it. `.` and empty
    /// components are dropped; `..` anywhere is refused rather than resolved, so a client can
    /// never climb, even within the box.
    pub fn parse(raw: &[u8]) -> Result<VirtualPath, BoxError> {
        let s = std::str::from_utf8(raw).map_err(|_| BoxError::BadName {
            why: "path is not UTF-8",
        })?;
        if s.contains('\0') {
            return Err(BoxError::BadName {
                why: "NUL byte in path",
            });
        }
        let mut parts = Vec::new();
        for c in s.split('/') {
            match c {
                "" | "." => {}
                ".." => return Err(BoxError::Escape),
                c => parts.push(c),
            }
        }
        match parts.as_slice() {
            [] => Ok(VirtualPath::Root),
            [folder] => Ok(VirtualPath::Folder(folder_named(folder)?)),
            [folder, name] => Ok(VirtualPath::File(
                folder_named(folder)?,
                FileName::new(name)?,
            )),
            _ => Err(BoxError::NotFound),
        }
    }

    /// The canonical absolute form, as `realpath` answers it.
    pub fn to_absolute(&self) -> String {
        match self {
            VirtualPath::Root => "/".to_owned(),
            VirtualPath::Folder(f) => format!("/{f}"),
            VirtualPath::File(f, n) => format!("/{f}/{n}"),
        }
    }
}

fn folder_named(s: &str) -> Result<Folder, BoxError> {
    Folder::from_name(s).ok_or(BoxError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<VirtualPath, BoxError> {
        VirtualPath::parse(s.as_bytes())
    }

    #[test]
    fn accepts_the_box_tree() {
        assert_eq!(parse("/").unwrap(), VirtualPath::Root);
        assert_eq!(parse(".").unwrap(), VirtualPath::Root);
        assert_eq!(parse("").unwrap(), VirtualPath::Root);
        assert_eq!(
            parse("/inbox/").unwrap(),
            VirtualPath::Folder(Folder::Inbox)
        );
        assert_eq!(
            parse("outbox").unwrap(),
            VirtualPath::Folder(Folder::Outbox)
        );
        let p = parse("//inbox/./a.zip").unwrap();
        assert_eq!(p.to_absolute(), "/inbox/a.zip");
    }

    #[test]
    fn refuses_escapes_and_odd_names() {
        assert!(matches!(parse("/.."), Err(BoxError::Escape)));
        assert!(matches!(parse("/inbox/../outbox/x"), Err(BoxError::Escape)));
        assert!(matches!(parse("../etc/passwd"), Err(BoxError::Escape)));
        assert!(matches!(
            parse("/inbox/.hidden"),
            Err(BoxError::BadName { .. })
        ));
        assert!(matches!(
            VirtualPath::parse(b"/inbox/a\0b"),
            Err(BoxError::BadName { .. })
        ));
        assert!(matches!(
            VirtualPath::parse(b"/inbox/\xff"),
            Err(BoxError::BadName { .. })
        ));
        let long = format!("/inbox/{}", "a".repeat(256));
        assert!(matches!(parse(&long), Err(BoxError::BadName { .. })));
        assert!(matches!(parse("/etc/passwd"), Err(BoxError::NotFound)));
        assert!(matches!(parse("/inbox/a/b"), Err(BoxError::NotFound)));
        assert!(matches!(
            FileName::new("a\\b"),
            Err(BoxError::BadName { .. })
        ));
    }
}
