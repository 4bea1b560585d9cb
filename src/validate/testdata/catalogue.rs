//! The catalogue callers choose from: what a generated archive holds ([`Spec`]) and the one
//! rule each broken archive breaks ([`Violation`]), kept apart from how the files are written
//! so that what a test asks for reads in one place.

use std::fmt;
use std::path::PathBuf;

use time::Date;

use super::Edition;
use crate::config::CounterpartKind;
use crate::validate::format::{self, ArchiveName, DocKind, Folder, Party, RecordName, date_digits};

/// The edition of each kind of non-CDA file (the CDA has one namespace in every edition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Editions {
    pub index: Edition,
    pub summary: Edition,
    pub claims: Edition,
}

impl Editions {
    pub const CURRENT: Editions = Editions::all(Edition::Current);

    pub const fn all(e: Edition) -> Editions {
        Editions {
            index: e,
            summary: e,
            claims: e,
        }
    }
}

/// What a generated archive holds.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The sender's number: 10 digits (institution) or 8 (insurer).
    pub sender: String,
    pub sender_kind: CounterpartKind,
    /// The receiver's number, 8 digits (insurer, agency) or 10 (institution).
    pub receiver: String,
    /// Who the receiver is: the root of its id in the index.
    pub receiver_party: Party,
    /// 種別 (付属資料7 別表1): 6 institution → insurer, 1 institution → agency, …
    pub interaction_type: u8,
    /// The insurers of the persons, assigned round-robin (by default just the receiver). An
    /// archive for an agency may mix several.
    pub insurers: Vec<String>,
    pub persons: usize,
    /// Checkup (hc08 + cc08, 実施区分 1) or guidance (hg08 + gc08, 実施区分 2).
    pub kind: DocKind,
    /// The creation date (index, zip and file names, the documents).
    pub created: Date,
    /// N of the names: the same day's send count, 0–9.
    pub send_count: u8,
    /// The serial of the first person's files (000001 by default).
    pub serial_start: u32,
    pub seed: u64,
    /// One settlement per person under `CLAIMS/`, and the summary.
    pub claims: bool,
    pub editions: Editions,
    /// Copy this schema set directory (e.g. one holding `ix08_V08.xsd`, …,
    /// `coreschemas/*.xsd`) into `XSD/`, as found.
    pub xsd_from: Option<PathBuf>,
    /// Extra valid observation lines in the first document, to make a file of many lines.
    pub padding_lines: usize,
    /// More files to put in the top folder as they are (e.g. under `XSD/`, which the check
    /// never uses but the virus scanner reads), by their path inside it.
    pub extra_files: Vec<(String, Vec<u8>)>,
}

/// The interaction type of a sender and a receiver by ORCA's pairing (the first listed), or 9
/// (other).
pub fn default_interaction_type(from: Party, to: Party) -> u8 {
    format::INTERACTION_TYPES
        .iter()
        .find(|&&(_, f, t)| f == from && t == to)
        .map_or(9, |&(code, _, _)| code)
}

fn party_of(kind: CounterpartKind) -> Party {
    match kind {
        CounterpartKind::Clinic => Party::Institution,
        CounterpartKind::Insurer => Party::Insurer,
    }
}

impl Spec {
    /// A checkup archive with claims from clinic 1312345679 to insurer 06130017 (the example
    /// config), interaction type 6, sent first that day.
    pub fn example(persons: usize, created: Date) -> Spec {
        Spec {
            sender: "1312345679".into(),
            sender_kind: CounterpartKind::Clinic,
            receiver: "06130017".into(),
            receiver_party: Party::Insurer,
            interaction_type: 6,
            insurers: vec!["06130017".into()],
            persons,
            kind: DocKind::Checkup,
            created,
            send_count: 0,
            serial_start: 1,
            seed: 1,
            claims: true,
            editions: Editions::CURRENT,
            xsd_from: None,
            padding_lines: 0,
            extra_files: Vec::new(),
        }
    }

    /// The example archive addressed to an agency (interaction type 1, receiver root .103),
    /// its persons insured by `insurers` in turn.
    pub fn to_agency(persons: usize, created: Date, agency: &str, insurers: &[&str]) -> Spec {
        let mut spec = Spec::example(persons, created);
        spec.receiver = agency.into();
        spec.receiver_party = Party::Agency;
        spec.interaction_type = default_interaction_type(Party::Institution, Party::Agency);
        spec.insurers = insurers.iter().map(|&s| s.to_owned()).collect();
        spec
    }

    /// The example archive with a current-edition index and summary and claims of `claims`'
    /// edition: `V2007` (2007-namespace claims, as the older software writes) or
    /// `Intermediate` (as seen in a real 2024 archive).
    pub fn mixed_editions(persons: usize, created: Date, claims: Edition) -> Spec {
        let mut spec = Spec::example(persons, created);
        spec.editions.claims = claims;
        spec
    }

    pub fn sender_party(&self) -> Party {
        party_of(self.sender_kind)
    }

    /// The archive's name (the zip's without `.zip`, its top folder's).
    pub fn archive_name(&self) -> ArchiveName {
        ArchiveName {
            sender: self.sender.clone(),
            receiver: self.receiver.clone(),
            date: date_digits(self.created),
            send_count: self.send_count,
            service_event: self.kind.service_event(),
        }
    }

    /// The name of the person `index`'s (0-based) file in `folder`.
    pub fn record_name(&self, folder: Folder, index: usize) -> RecordName {
        RecordName {
            kind: self.kind,
            folder,
            // Record names carry 10 digits; an 8-digit sender is zero-padded (UNCONFIRMED).
            sender: format!(
                "{:0>width$}",
                self.sender,
                width = format::RECORD_SENDER_DIGITS
            ),
            date: date_digits(self.created),
            send_count: self.send_count,
            service_event: self.kind.service_event(),
            serial: self.serial_start + index as u32,
        }
    }

    /// The insurer of person `index` (0-based).
    pub fn insurer_of(&self, index: usize) -> &str {
        if self.insurers.is_empty() {
            &self.receiver
        } else {
            &self.insurers[index % self.insurers.len()]
        }
    }
}

/// Where the finding for a violation must point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub rule: &'static str,
    /// The path inside the top folder (e.g. `DATA/h13123456792026120401000001.xml`,
    /// `ix08_V08.xml`); an entry outside it by its name in the zip; `None` for a finding about
    /// the archive as a whole.
    pub file: Option<String>,
    /// The 1-based line of the offending element.
    pub line: Option<u32>,
}

/// `RULE (expected at FILE:LINE)`, `-` for a finding about the whole archive: what a
/// violating archive tells the person who asked for it.
impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (expected at {}",
            self.rule,
            self.file.as_deref().unwrap_or("-")
        )?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(")")
    }
}

macro_rules! violations {
    ($($(#[$doc:meta])* $name:ident => $rule:ident,)*) => {
        /// One broken rule per archive.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Violation {
            $($(#[$doc])* $name,)*
        }

        impl Violation {
            pub const ALL: [Violation; [$(Violation::$name,)*].len()] = [$(Violation::$name,)*];

            /// The rule id the check must report.
            pub fn rule(self) -> &'static str {
                match self {
                    $(Violation::$name => crate::validate::finding::Rule::$rule.id(),)*
                }
            }
        }
    };
}

violations! {
    /// Cut short: no end of central directory.
    Unreadable => ZipUnreadable,
    Traversal => ZipTraversal,
    BadName => ZipBadName,
    /// `IX08_V08.XML` beside `ix08_V08.xml`.
    Duplicate => ZipDuplicate,
    TooManyEntries => ZipTooManyEntries,
    /// 10 GiB of zeros in about 10 MiB, sizes declared honestly.
    EntryTooLarge => ZipEntryTooLarge,
    TotalTooLarge => ZipTotalTooLarge,
    Ratio => ZipRatio,
    Nested => ZipNested,
    Encrypted => ZipEncrypted,
    Method => ZipMethod,
    HeaderMismatch => ZipHeaderMismatch,
    /// A wrong CRC.
    Corrupt => ZipCorrupt,
    /// A DATA entry whose headers claim 4 KiB and that inflates to 10 GiB.
    LyingSize => ZipCorrupt,
    /// The files at the zip root, without the top folder.
    TopFolder => LayoutTopFolder,
    /// No `ix08_V08.xml`.
    Missing => LayoutMissing,
    /// No file under `DATA/`.
    Empty => LayoutEmpty,
    /// `su08_V08.xml` without `CLAIMS/`.
    ClaimsSummary => LayoutClaimsSummary,
    /// `notes.txt` in the top folder.
    Unexpected => LayoutUnexpected,
    /// The top folder named `results`.
    FolderName => LayoutFolderName,
    /// Uploaded as `results.zip` (top folder `results`).
    ArchiveName => ArchiveName,
    /// The zip and folder name carry another institution as sender.
    ArchiveSender => ArchiveSender,
    /// The zip and folder name carry the day before the index's creationTime.
    ArchiveNameMismatch => ArchiveNameMismatch,
    /// The last person's claim is missing.
    NameUnpaired => NameUnpaired,
    /// The last DATA file named `h1312345679_0059_00280081.xml`-like (no claims).
    NamePattern => NamePattern,
    /// The last DATA file named with another institution (no claims).
    NameSender => NameSender,
    /// The last DATA file named with the day before (no claims).
    NameMismatch => NameMismatch,
    /// Serials starting at 000005 (no claims).
    NameSerial => NameSerial,
    /// The index receiver with 7 digits.
    NumberMalformed => NumberMalformed,
    /// The index receiver with a wrong Luhn check digit.
    CheckDigit => NumberCheckDigit,
    /// interactionType 7 (insurer → institution) for an institution → insurer archive.
    InteractionType => IndexInteractionType,
    /// The sender id under the insurer root (.101), interaction type 8 to match.
    SenderNumber => IndexSenderNumber,
    /// Index, documents and record names from another institution; the zip named by the
    /// uploader.
    SenderMismatch => IndexSenderMismatch,
    /// The receiver id under the local-government root (.105), interaction type 9 (other).
    ReceiverNumber => IndexReceiverNumber,
    /// Addressed, throughout, to an insurer no configuration knows.
    ReceiverUnknown => IndexReceiverUnknown,
    /// totalRecordCount one more than the files.
    IndexCount => IndexCountMismatch,
    /// totalClaimAmount one yen more than the claims' sum.
    SummaryTotals => SummaryTotals,
    /// totalSubjectCount one more than the claims.
    SummaryCount => SummarySubjectCount,
    /// The summary's serviceEventType 2 in a checkup archive.
    ServiceEventMismatch => ServiceEventMismatch,
    /// A guidance document (`g…`) in a checkup archive (no claims).
    DataKind => ServiceEventMismatch,
    /// The last person insured by another insurer than the receiving one (in DATA only).
    DataInsurer => DataInsurer,
    /// The last document authored by another institution.
    DataSender => DataSenderMismatch,
    /// The last person born on 19650231 (schema-valid: the schema checks digits only).
    DateInvalid => DateInvalid,
    /// The last document dated two years after its creation.
    DateFuture => DateFuture,
    /// The last claim in a namespace of no edition.
    EditionUnknown => EditionUnknown,
    /// The last claim in the 2007 edition (valid against it), the rest current.
    EditionNonCurrent => EditionNonCurrent,
    /// The same archive as `EditionNonCurrent`, for a configuration that accepts only the
    /// current edition.
    EditionNotAccepted => EditionNotAccepted,
    /// An element the schema does not know in the last document.
    XsdInvalid => XsdInvalid,
    /// The last document declared Shift_JIS.
    Encoding => XmlEncoding,
    /// A DOCTYPE with an external entity.
    Dtd => XmlDtd,
    BillionLaughs => XmlDtd,
    /// The last document not well-formed.
    Malformed => XmlMalformed,
}

impl Violation {
    /// A short name for the command line, e.g. `lying-size`.
    pub fn slug(self) -> String {
        let debug = format!("{self:?}");
        let mut out = String::new();
        for (i, c) in debug.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    pub fn from_slug(s: &str) -> Option<Violation> {
        Violation::ALL.into_iter().find(|v| v.slug() == s)
    }

    /// The file name to upload this violation's archive under (the official name, except for
    /// the violations of the name).
    pub fn file_name(self, spec: &Spec) -> String {
        names(spec, Some(self)).0
    }

    /// The spec the archive's content is written from.
    pub(super) fn adjust(self, spec: &Spec) -> Spec {
        use Violation::*;
        let mut s = spec.clone();
        match self {
            // Name rules concern the DATA file alone: no claims, so that no partner differs.
            NamePattern | NameSender | NameMismatch | NameSerial | DataKind | LyingSize | Empty => {
                s.claims = false
            }
            ClaimsSummary => s.claims = false,
            NameUnpaired | SummaryTotals | SummaryCount | ServiceEventMismatch | EditionUnknown
            | EditionNonCurrent | EditionNotAccepted => s.claims = true,
            SenderMismatch => s.sender = OTHER_INSTITUTION.into(),
            ReceiverUnknown => {
                s.receiver = UNKNOWN_INSURER.into();
                s.insurers = vec![UNKNOWN_INSURER.into()];
            }
            _ => {}
        }
        if self == NameSerial {
            s.serial_start = 5;
        }
        s
    }
}

/// The valid numbers of another institution, of an insurer no configuration knows, and of
/// another insurer, for violations.
pub(super) const OTHER_INSTITUTION: &str = "2717654327";
const UNKNOWN_INSURER: &str = "39999990";
pub(super) const OTHER_INSURER: &str = "06130025";

/// The upload's file name and the top folder's name for `spec` broken by `violation`.
pub(super) fn names(spec: &Spec, violation: Option<Violation>) -> (String, String) {
    use Violation::*;
    let content = violation.map_or_else(|| spec.clone(), |v| v.adjust(spec));
    let mut name = content.archive_name();
    match violation {
        Some(SenderMismatch) => name.sender = spec.sender.clone(),
        Some(ArchiveSender) => name.sender = OTHER_INSTITUTION.into(),
        Some(ArchiveNameMismatch) => {
            name.date = date_digits(spec.created.previous_day().unwrap_or(spec.created))
        }
        Some(ArchiveName) => return ("results.zip".into(), "results".into()),
        _ => {}
    }
    let folder = match violation {
        Some(FolderName) => "results".into(),
        _ => name.to_string(),
    };
    (name.file_name(), folder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expectation_names_the_rule_and_where_its_finding_points() {
        let at = |file: Option<&str>, line| Expected {
            rule: "date.invalid",
            file: file.map(str::to_owned),
            line,
        };
        assert_eq!(
            at(Some("DATA/a.xml"), Some(12)).to_string(),
            "date.invalid (expected at DATA/a.xml:12)"
        );
        assert_eq!(at(None, None).to_string(), "date.invalid (expected at -)");
    }
    use crate::numbers::{self, NumberKind};

    fn day() -> Date {
        Date::from_calendar_date(2026, time::Month::December, 4).unwrap()
    }

    #[test]
    fn the_numbers_violations_use_are_well_formed() {
        assert!(numbers::check(NumberKind::Institution, OTHER_INSTITUTION).is_ok());
        assert!(numbers::check(NumberKind::Insurer, UNKNOWN_INSURER).is_ok());
        assert!(numbers::check(NumberKind::Insurer, OTHER_INSURER).is_ok());
        let spec = Spec::example(1, day());
        assert!(numbers::check(NumberKind::Institution, &spec.sender).is_ok());
        assert!(numbers::check(NumberKind::Insurer, &spec.receiver).is_ok());
        assert_ne!(OTHER_INSURER, spec.receiver);
    }

    #[test]
    fn violations_have_distinct_slugs_and_contract_rules() {
        // The rule ids of the contract with the check that an archive can break.
        const CONTRACT: &[&str] = &[
            "zip.unreadable",
            "zip.traversal",
            "zip.bad-name",
            "zip.duplicate",
            "zip.too-many-entries",
            "zip.entry-too-large",
            "zip.total-too-large",
            "zip.ratio",
            "zip.nested",
            "zip.encrypted",
            "zip.method",
            "zip.header-mismatch",
            "zip.corrupt",
            "layout.top-folder",
            "layout.missing",
            "layout.empty",
            "xml.encoding",
            "xml.dtd",
            "xml.malformed",
            "xsd.invalid",
            "edition.unknown",
            "edition.not-accepted",
            "index.sender-number",
            "index.sender-mismatch",
            "archive.sender",
            "index.receiver-number",
            "index.receiver-unknown",
            "data.insurer",
            "layout.claims-summary",
            "layout.unexpected",
            "name.unpaired",
            "number.check-digit",
            "number.malformed",
            "index.count-mismatch",
            "service-event.mismatch",
            "data.sender-mismatch",
            "date.invalid",
            "date.future",
            "archive.name",
            "archive.name-mismatch",
            "layout.folder-name",
            "name.pattern",
            "name.sender",
            "name.mismatch",
            "name.serial",
            "index.interaction-type",
            "edition.non-current",
            "summary.totals",
            "summary.subject-count",
        ];
        for v in Violation::ALL {
            assert_eq!(Violation::from_slug(&v.slug()), Some(v));
            assert!(CONTRACT.contains(&v.rule()), "{v:?}: {}", v.rule());
        }
        for rule in CONTRACT {
            assert!(
                Violation::ALL.iter().any(|v| v.rule() == *rule),
                "no archive breaks {rule}"
            );
        }
    }

    #[test]
    fn archive_and_record_names_follow_the_pattern() {
        let mut spec = Spec::example(3, day());
        assert_eq!(
            spec.archive_name().file_name(),
            "1312345679_06130017_202612040_1.zip"
        );
        let data = spec.record_name(Folder::Data, 0);
        assert_eq!(data.to_string(), "h13123456792026120401000001.xml");
        assert_eq!(
            spec.record_name(Folder::Claims, 2).path(),
            "CLAIMS/c13123456792026120401000003.xml"
        );
        assert_eq!(data.partner(), spec.record_name(Folder::Claims, 0));
        spec.kind = DocKind::Guidance;
        spec.send_count = 3;
        spec.serial_start = 0;
        assert_eq!(
            spec.archive_name().to_string(),
            "1312345679_06130017_202612043_2"
        );
        assert_eq!(
            spec.record_name(Folder::Claims, 0).to_string(),
            "p13123456792026120432000000.xml"
        );
        // Every name written parses back as what it was written from.
        let name = spec.record_name(Folder::Data, 7);
        assert_eq!(RecordName::parse(&name.to_string()), Some(name));
        assert_eq!(
            ArchiveName::parse(&spec.archive_name().file_name()),
            Some(spec.archive_name())
        );
    }

    #[test]
    fn violations_of_the_name_change_the_upload_name() {
        let spec = Spec::example(2, day());
        let official = spec.archive_name().file_name();
        assert_eq!(Violation::DateInvalid.file_name(&spec), official);
        assert_eq!(Violation::FolderName.file_name(&spec), official);
        assert_eq!(Violation::SenderMismatch.file_name(&spec), official);
        assert_eq!(Violation::ArchiveName.file_name(&spec), "results.zip");
        assert_eq!(
            Violation::ArchiveSender.file_name(&spec),
            "2717654327_06130017_202612040_1.zip"
        );
        assert_eq!(
            Violation::ArchiveNameMismatch.file_name(&spec),
            "1312345679_06130017_202612030_1.zip"
        );
        assert_eq!(
            Violation::ReceiverUnknown.file_name(&spec),
            "1312345679_39999990_202612040_1.zip"
        );
    }

    #[test]
    fn interaction_types_default_to_orcas_pairing() {
        assert_eq!(
            default_interaction_type(Party::Institution, Party::Insurer),
            6
        );
        assert_eq!(
            default_interaction_type(Party::Institution, Party::Agency),
            1
        );
        assert_eq!(
            default_interaction_type(Party::Institution, Party::Institution),
            9
        );
        let s = Spec::to_agency(4, day(), "91300010", &["06130017", "06130025"]);
        assert_eq!((s.interaction_type, s.receiver_party), (1, Party::Agency));
        let insurers: Vec<&str> = (0..4).map(|i| s.insurer_of(i)).collect();
        assert_eq!(insurers, ["06130017", "06130025", "06130017", "06130025"]);
    }
}
