//! The format of our own that the check validated before the official one (being replaced).

//! The facts of the checkup exchange format that the validator relies on, in one table.
//!
//! Some of these are read from the published format; others are believed but not yet checked
//! against the official text. Those carry `(confirm)` here and are listed in
//! docs/validation.md, so that correcting one is a one-line change in this file.

use crate::config::CounterpartKind;

/// The exchange header at the root of the archive.
pub const INDEX: &str = "index.xml";
/// The totals at the root of the archive.
pub const SUMMARY: &str = "summary.xml";
/// One CDA document per person and record.
pub const DATA_DIR: &str = "DATA/";
/// Settlement records, optional.
pub const CLAIMS_DIR: &str = "CLAIMS/";
/// The sender's own schema copies, optional and never used.
pub const XSD_DIR: &str = "XSD/";

/// Namespace of `index.xml` and `summary.xml` (confirm).
pub const EXCHANGE_NS: &str = "http://tokuteikenshin.jp/checkup/2013";
/// Namespace of the CDA documents under `DATA/`.
pub const CDA_NS: &str = "urn:hl7-org:v3";

/// OID root of insurer numbers in identifier elements (confirm).
pub const INSURER_OID: &str = "1.2.392.200119.6.101";
/// OID root of institution numbers in identifier elements (confirm).
pub const INSTITUTION_OID: &str = "1.2.392.200119.6.102";

/// The OID root that identifies a party of `kind`.
pub fn party_oid(kind: CounterpartKind) -> &'static str {
    match kind {
        CounterpartKind::Clinic => INSTITUTION_OID,
        CounterpartKind::Insurer => INSURER_OID,
    }
}

/// The schema each file is validated against, by its role in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Index,
    Summary,
    Checkup,
    Guidance,
    Claims,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Index,
        Role::Summary,
        Role::Checkup,
        Role::Guidance,
        Role::Claims,
    ];

    /// The file in `schema_dir` holding this role's schema (names of our own schema set).
    pub fn schema_file(self) -> &'static str {
        match self {
            Role::Index => "index.xsd",
            Role::Summary => "summary.xsd",
            Role::Checkup => "checkup.xsd",
            Role::Guidance => "guidance.xsd",
            Role::Claims => "claims.xsd",
        }
    }
}

/// The kind letter that starts each file name under `DATA/` and `CLAIMS/` (confirm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Checkup,
    Guidance,
    Claims,
}

impl RecordKind {
    pub fn prefix(self) -> char {
        match self {
            RecordKind::Checkup => 'h',
            RecordKind::Guidance => 'g',
            RecordKind::Claims => 'c',
        }
    }

    pub fn from_prefix(c: char) -> Option<RecordKind> {
        [
            RecordKind::Checkup,
            RecordKind::Guidance,
            RecordKind::Claims,
        ]
        .into_iter()
        .find(|k| k.prefix() == c)
    }

    pub fn role(self) -> Role {
        match self {
            RecordKind::Checkup => Role::Checkup,
            RecordKind::Guidance => Role::Guidance,
            RecordKind::Claims => Role::Claims,
        }
    }

    /// The `serviceEventType` code of archives carrying this kind (confirm).
    pub fn service_event_code(self) -> Option<&'static str> {
        match self {
            RecordKind::Checkup => Some("1"),
            RecordKind::Guidance => Some("2"),
            RecordKind::Claims => None,
        }
    }
}

/// Digits of the creation date in a record file name (YYYYMMDD).
pub const NAME_DATE_DIGITS: usize = 8;
/// Digits of the serial number that ends a record file name (confirm).
pub const NAME_SERIAL_DIGITS: usize = 7;

/// Interaction types: the code in `index.xml` and the route it stands for (confirm).
pub const INTERACTION_TYPES: &[(&str, CounterpartKind, CounterpartKind)] = &[
    // Results from a checkup or guidance institution to an insurer.
    ("1", CounterpartKind::Clinic, CounterpartKind::Insurer),
    // An insurer's data returned to an institution (e.g. for re-submission).
    ("2", CounterpartKind::Insurer, CounterpartKind::Clinic),
];

/// The route an interaction type code stands for.
pub fn interaction_route(code: &str) -> Option<(CounterpartKind, CounterpartKind)> {
    INTERACTION_TYPES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|&(_, from, to)| (from, to))
}

/// Element names in `index.xml` (confirm): children of the root `index`.
pub mod index {
    pub const ROOT: &str = "index";
    pub const INTERACTION_TYPE: &str = "interactionType";
    pub const CREATION_TIME: &str = "creationTime";
    pub const SENDER: &str = "sender";
    pub const RECEIVER: &str = "receiver";
    pub const SERVICE_EVENT_TYPE: &str = "serviceEventType";
    pub const TOTAL_RECORD_COUNT: &str = "totalRecordCount";
}

/// Element names in `summary.xml` (confirm): children of the root `summary`.
pub mod summary {
    pub const ROOT: &str = "summary";
    pub const SERVICE_EVENT_TYPE: &str = "serviceEventType";
    pub const TOTAL_RECORD_COUNT: &str = "totalRecordCount";
}

/// Paths (element names from the document root, attribute last) of the dates in a CDA
/// document that must be real dates and not in the future.
pub const CDA_DATES: &[&[&str]] = &[
    &["effectiveTime", "@value"],
    &[
        "recordTarget",
        "patientRole",
        "patient",
        "birthTime",
        "@value",
    ],
    &["author", "time", "@value"],
    &["documentationOf", "serviceEvent", "effectiveTime", "@value"],
];

/// Path of the authoring institution's identifier in a CDA document.
pub const CDA_AUTHOR_ID: &[&str] = &["author", "assignedAuthor", "id"];
