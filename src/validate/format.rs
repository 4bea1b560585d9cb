//! The facts of the official exchange format (MHLW 特定健診・特定保健指導 V08) that the check
//! and the generator rely on, in one place: file and folder names, the name patterns of the
//! archive and its records, the OIDs, the interaction types and the elements read by the rules.
//!
//! Every fact here comes from the official schema sets or the published guidance listed in
//! docs/validation.md; what no source pinned down is marked UNCONFIRMED there and is reported
//! with a lowerable severity rather than refused.

use std::fmt;

use time::Date;

/// The index (交換用基本情報), required in every archive.
pub const INDEX: &str = "ix08_V08.xml";
/// The summary (集計情報), present exactly when claims are.
pub const SUMMARY: &str = "su08_V08.xml";
/// One CDA document per person.
pub const DATA_DIR: &str = "DATA/";
/// One settlement per person, optional.
pub const CLAIMS_DIR: &str = "CLAIMS/";
/// The sender's copy of the schema set: never used for validation, but scanned.
pub const XSD_DIR: &str = "XSD/";

/// Namespace of the CDA documents (hc08, hg08) in every edition.
pub const CDA_NS: &str = "urn:hl7-org:v3";

/// Root element of the index, the summary and the claims of each kind.
pub const INDEX_ROOT: &str = "index";
pub const SUMMARY_ROOT: &str = "summary";
pub const CDA_ROOT: &str = "ClinicalDocument";

/// The OIDs of the exchange (all under 1.2.392.200119.6).
pub mod oid {
    /// 保険者番号, 8 digits.
    pub const INSURER: &str = "1.2.392.200119.6.101";
    /// 健診・保健指導機関番号, 10 digits.
    pub const INSTITUTION: &str = "1.2.392.200119.6.102";
    /// 代行機関番号, 8 digits.
    pub const AGENCY: &str = "1.2.392.200119.6.103";
    /// 市町村 (local government).
    pub const LOCAL_GOVERNMENT: &str = "1.2.392.200119.6.105";
    /// Insurance card symbol (記号), number (番号), branch (枝番).
    pub const CARD_SYMBOL: &str = "1.2.392.200119.6.204";
    pub const CARD_NUMBER: &str = "1.2.392.200119.6.205";
    pub const CARD_BRANCH: &str = "1.2.392.200119.6.211";
    /// Checkup ticket (受診券) and guidance ticket (利用券) numbers in the claims; in the CDA
    /// the insurer number is appended (`.209.1<insurer>`).
    pub const CHECKUP_TICKET: &str = "1.2.392.200119.6.209";
    pub const GUIDANCE_TICKET: &str = "1.2.392.200119.6.210";
    /// Report category (10 checkup, 21–25 guidance), checkup and guidance item codes,
    /// section codes, sex.
    pub const REPORT_CATEGORY: &str = "1.2.392.200119.6.1001";
    pub const CHECKUP_ITEM: &str = "1.2.392.200119.6.1005";
    pub const GUIDANCE_ITEM: &str = "1.2.392.200119.6.1006";
    pub const SECTION: &str = "1.2.392.200119.6.1010";
    pub const SEX: &str = "1.2.392.200119.6.1104";
}

/// A party of the exchange, as the id roots of the index and the CDA name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    Institution,
    Insurer,
    Agency,
    LocalGovernment,
}

impl Party {
    pub fn oid(self) -> &'static str {
        match self {
            Party::Institution => oid::INSTITUTION,
            Party::Insurer => oid::INSURER,
            Party::Agency => oid::AGENCY,
            Party::LocalGovernment => oid::LOCAL_GOVERNMENT,
        }
    }

    pub fn from_oid(root: &str) -> Option<Party> {
        [
            Party::Institution,
            Party::Insurer,
            Party::Agency,
            Party::LocalGovernment,
        ]
        .into_iter()
        .find(|p| p.oid() == root)
    }

    /// Japanese and English names, for messages.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            Party::Institution => ("健診・保健指導機関", "an institution"),
            Party::Insurer => ("保険者", "an insurer"),
            Party::Agency => ("代行機関", "an agency"),
            Party::LocalGovernment => ("市町村", "a local government"),
        }
    }
}

/// Interaction types (付属資料7 別表1) whose sending and receiving parties are known: ORCA's
/// pairing of id roots. 9 (other), 12–13 (reserved) and 14–20 (meaning UNCONFIRMED) are valid
/// codes without a pairing to check.
pub const INTERACTION_TYPES: &[(u8, Party, Party)] = &[
    (1, Party::Institution, Party::Agency),
    (2, Party::Agency, Party::Institution),
    (3, Party::Agency, Party::Insurer),
    (4, Party::Insurer, Party::Agency),
    (5, Party::Insurer, Party::Agency),
    (6, Party::Institution, Party::Insurer),
    (7, Party::Insurer, Party::Institution),
    (8, Party::Insurer, Party::Insurer),
    (10, Party::Insurer, Party::Insurer),
    (11, Party::Agency, Party::Insurer),
];

/// The sending and receiving parties of interaction type `code`, where known.
pub fn interaction_parties(code: u8) -> Option<(Party, Party)> {
    INTERACTION_TYPES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|&(_, from, to)| (from, to))
}

/// What an archive carries: checkup results or guidance results, never both (UNCONFIRMED
/// against the specification text, followed by every known writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    Checkup,
    Guidance,
}

impl DocKind {
    /// First letter of a DATA file name.
    pub fn data_prefix(self) -> char {
        match self {
            DocKind::Checkup => 'h',
            DocKind::Guidance => 'g',
        }
    }

    /// First letter of a CLAIMS file name.
    pub fn claims_prefix(self) -> char {
        match self {
            DocKind::Checkup => 'c',
            DocKind::Guidance => 'p',
        }
    }

    /// Root element of a claim of this kind.
    pub fn claims_root(self) -> &'static str {
        match self {
            DocKind::Checkup => "checkupClaim",
            DocKind::Guidance => "healthGuidanceClaim",
        }
    }

    /// The 実施区分 (serviceEventType) code of archives of this kind: 1 特定健診,
    /// 2 特定保健指導.
    pub fn service_event(self) -> u8 {
        match self {
            DocKind::Checkup => 1,
            DocKind::Guidance => 2,
        }
    }

    pub fn from_service_event(code: u8) -> Option<DocKind> {
        match code {
            1 => Some(DocKind::Checkup),
            2 => Some(DocKind::Guidance),
            _ => None,
        }
    }

    /// The kind and folder a record file name's first letter stands for.
    pub fn from_prefix(c: char) -> Option<(DocKind, Folder)> {
        [DocKind::Checkup, DocKind::Guidance]
            .into_iter()
            .find_map(|k| {
                if c == k.data_prefix() {
                    Some((k, Folder::Data))
                } else if c == k.claims_prefix() {
                    Some((k, Folder::Claims))
                } else {
                    None
                }
            })
    }
}

/// The two folders of per-person files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Folder {
    Data,
    Claims,
}

impl Folder {
    pub fn dir(self) -> &'static str {
        match self {
            Folder::Data => DATA_DIR,
            Folder::Claims => CLAIMS_DIR,
        }
    }
}

/// `YYYYMMDD` of a date.
pub fn date_digits(d: Date) -> String {
    format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day())
}

/// The calendar date at the start of a `YYYYMMDD…` value, if it is a real one.
pub fn parse_date(value: &str) -> Option<Date> {
    let digits = value.get(..8)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = digits[..4].parse().ok()?;
    let month: u8 = digits[4..6].parse().ok()?;
    let day: u8 = digits[6..8].parse().ok()?;
    Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()
}

/// The name of an archive: `<sender>_<receiver>_<YYYYMMDD><N>_<X>` (`.zip` for the file, bare
/// for its top folder). Sender 10 digits (institution) or 8 (insurer, agency); receiver 8;
/// N the same-day send count 0–9; X the 実施区分 code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveName {
    pub sender: String,
    pub receiver: String,
    /// `YYYYMMDD`, as written (not necessarily a real date).
    pub date: String,
    pub send_count: u8,
    pub service_event: u8,
}

impl ArchiveName {
    /// Reads a name with or without `.zip`; `None` if it does not follow the pattern.
    pub fn parse(name: &str) -> Option<ArchiveName> {
        let stem = name.strip_suffix(".zip").unwrap_or(name);
        let mut parts = stem.split('_');
        let (sender, receiver, dated, x) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !(digits(sender) && digits(receiver) && digits(dated) && digits(x))
            || !(sender.len() == 10 || sender.len() == 8)
            || receiver.len() != 8
            || dated.len() != 9
            || x.len() != 1
        {
            return None;
        }
        Some(ArchiveName {
            sender: sender.into(),
            receiver: receiver.into(),
            date: dated[..8].into(),
            send_count: dated.as_bytes()[8] - b'0',
            service_event: x.as_bytes()[0] - b'0',
        })
    }

    /// The file name, with `.zip`.
    pub fn file_name(&self) -> String {
        format!("{self}.zip")
    }
}

impl fmt::Display for ArchiveName {
    /// The top folder's name (without `.zip`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_{}_{}{}_{}",
            self.sender, self.receiver, self.date, self.send_count, self.service_event
        )
    }
}

/// The name of a file under DATA/ or CLAIMS/:
/// `<prefix><sender 10 digits><YYYYMMDD><N><X><serial 6 digits>.xml`, 27 characters before
/// `.xml`. A person's DATA and CLAIMS files differ only in the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordName {
    pub kind: DocKind,
    pub folder: Folder,
    pub sender: String,
    pub date: String,
    pub send_count: u8,
    pub service_event: u8,
    pub serial: u32,
}

/// Digits of the sender in a record name (institutions; UNCONFIRMED for 8-digit senders).
pub const RECORD_SENDER_DIGITS: usize = 10;
/// Digits of the serial that ends a record name.
pub const RECORD_SERIAL_DIGITS: usize = 6;

impl RecordName {
    /// Reads a base name (without folder); `None` if it does not follow the pattern.
    pub fn parse(base: &str) -> Option<RecordName> {
        let stem = base.strip_suffix(".xml")?;
        let mut chars = stem.chars();
        let (kind, folder) = DocKind::from_prefix(chars.next()?)?;
        let digits = chars.as_str();
        if digits.len() != RECORD_SENDER_DIGITS + 8 + 2 + RECORD_SERIAL_DIGITS
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let (sender, rest) = digits.split_at(RECORD_SENDER_DIGITS);
        let (date, rest) = rest.split_at(8);
        let b = rest.as_bytes();
        Some(RecordName {
            kind,
            folder,
            sender: sender.into(),
            date: date.into(),
            send_count: b[0] - b'0',
            service_event: b[1] - b'0',
            serial: rest[2..].parse().ok()?,
        })
    }

    /// The name of the partner file in the other folder (a DATA file's claim and back).
    pub fn partner(&self) -> RecordName {
        RecordName {
            folder: match self.folder {
                Folder::Data => Folder::Claims,
                Folder::Claims => Folder::Data,
            },
            ..self.clone()
        }
    }

    /// The path inside the top folder, e.g. `DATA/h13123456792026120401000001.xml`.
    pub fn path(&self) -> String {
        format!("{}{self}", self.folder.dir())
    }
}

impl fmt::Display for RecordName {
    /// The base name, with `.xml`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.folder {
            Folder::Data => self.kind.data_prefix(),
            Folder::Claims => self.kind.claims_prefix(),
        };
        write!(
            f,
            "{prefix}{}{}{}{}{:0width$}.xml",
            self.sender,
            self.date,
            self.send_count,
            self.service_event,
            self.serial,
            width = RECORD_SERIAL_DIGITS
        )
    }
}

/// Elements of `ix08_V08.xml`, children of `index` in this order.
pub mod index {
    pub const INTERACTION_TYPE: &str = "interactionType";
    pub const CREATION_TIME: &str = "creationTime";
    pub const SENDER: &str = "sender";
    pub const RECEIVER: &str = "receiver";
    pub const SERVICE_EVENT_TYPE: &str = "serviceEventType";
    pub const TOTAL_RECORD_COUNT: &str = "totalRecordCount";
}

/// Elements of `su08_V08.xml`, children of `summary` in this order.
pub mod summary {
    pub const SERVICE_EVENT_TYPE: &str = "serviceEventType";
    pub const TOTAL_SUBJECT_COUNT: &str = "totalSubjectCount";
    pub const TOTAL_COST: &str = "totalCostAmount";
    pub const TOTAL_PAYMENT: &str = "totalPaymentAmount";
    pub const TOTAL_OTHER_PROGRAM: &str = "totalPaymentByOtherProgram";
    pub const TOTAL_CLAIM: &str = "totalClaimAmount";
}

/// Which amount of each claim a summary total adds up: (summary element, path under the
/// claim's `settlement` for checkup claims, for guidance claims). The correspondence is read
/// from the element names; the specification's table is UNCONFIRMED.
pub const SUMMARY_TOTALS: &[(&str, &[&str], &[&str])] = &[
    (summary::TOTAL_COST, &["unitAmount"], &["calculatedAmount"]),
    (
        summary::TOTAL_PAYMENT,
        &["paymentAmount"],
        &["payment", "amount"],
    ),
    (
        summary::TOTAL_OTHER_PROGRAM,
        &["paymentByOtherProgram"],
        &[],
    ),
    (summary::TOTAL_CLAIM, &["claimAmount"], &["claimAmount"]),
];

/// Paths (element names below `ClinicalDocument`) of the CDA dates that must be real and not
/// in the future.
pub const CDA_DATES: &[&[&str]] = &[
    &["effectiveTime"],
    &["recordTarget", "patientRole", "patient", "birthTime"],
    &["author", "time"],
    &["documentationOf", "serviceEvent", "effectiveTime", "low"],
    &["documentationOf", "serviceEvent", "effectiveTime", "high"],
];

/// The person's identifiers in a CDA: `recordTarget/patientRole/id`, one per root (insurer,
/// card symbol, number, branch).
pub const CDA_PATIENT_IDS: &[&str] = &["recordTarget", "patientRole"];
/// The authoring institution: `author/assignedAuthor/representedOrganization/id`.
pub const CDA_AUTHOR_ORG: &[&str] = &["author", "assignedAuthor", "representedOrganization"];

/// Namespace of the index, summary and claims (ix08, su08, cc08, gc08, co08) in the current
/// edition (schema set `mhlw-v08`).
pub const NS_CURRENT: &str = "https://www.mhlw.go.jp/stf/seisakunitsuite/bunya/0000161103.html";
/// Their namespace in the older edition (schema set `mhlw-v08-2007ns`) and in the intermediate
/// one (the current content under the old namespace).
pub const NS_2007: &str = "http://tokuteikenshin.jp/checkup/2007";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_round_trip() {
        let n = ArchiveName::parse("1312345679_06130017_202612040_1.zip").unwrap();
        assert_eq!(
            (n.sender.as_str(), n.receiver.as_str(), n.date.as_str()),
            ("1312345679", "06130017", "20261204")
        );
        assert_eq!((n.send_count, n.service_event), (0, 1));
        assert_eq!(n.file_name(), "1312345679_06130017_202612040_1.zip");
        assert_eq!(n.to_string(), "1312345679_06130017_202612040_1");
        for bad in [
            "results.zip",
            "1312345679_06130017_20261204_1.zip",
            "1312345679_6130017_202612040_1.zip",
            "1312345679_06130017_202612040_1_x.zip",
            "131234567a_06130017_202612040_1.zip",
        ] {
            assert_eq!(ArchiveName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn record_names_round_trip_and_pair() {
        let n = RecordName::parse("h13123456792026120401000001.xml").unwrap();
        assert_eq!((n.kind, n.folder), (DocKind::Checkup, Folder::Data));
        assert_eq!(
            (n.date.as_str(), n.send_count, n.service_event),
            ("20261204", 0, 1)
        );
        assert_eq!(n.serial, 1);
        assert_eq!(n.to_string(), "h13123456792026120401000001.xml");
        assert_eq!(n.partner().path(), "CLAIMS/c13123456792026120401000001.xml");
        let g = RecordName::parse("p13123456792026120402000000.xml").unwrap();
        assert_eq!(
            (g.kind, g.folder, g.serial),
            (DocKind::Guidance, Folder::Claims, 0)
        );
        for bad in [
            "x13123456792026120401000001.xml",
            "h1312345679202612040100001.xml",
            "h13123456792026120401000001.XML",
            "h1312345679_0059_00280081.xml",
        ] {
            assert_eq!(RecordName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn dates_must_exist() {
        assert!(parse_date("20240229").is_some());
        assert!(parse_date("20230229").is_none());
        assert!(parse_date("20261301").is_none());
        assert!(parse_date("2026").is_none());
        assert!(parse_date("20261120093000").is_some());
    }
}
