//! Synthetic archives in the official exchange format (MHLW 特定健診・特定保健指導 V08) for the
//! tests, the benchmarks and the README example: valid archives of any number of persons with
//! invented but plausible content (never real personal data), and one archive per rule the
//! check enforces, each saying where its finding must point.
//!
//! A valid archive is `<sender>_<receiver>_<YYYYMMDD><N>_<X>.zip` holding one top folder of the
//! same name with `ix08_V08.xml`, `su08_V08.xml` (with claims), `DATA/` (one hc08 or hg08 CDA per
//! person), `CLAIMS/` (one cc08 or gc08 settlement per person, paired by name) and, when asked,
//! `XSD/` copied from a schema set. Every XML file is valid against the official schema set of
//! its namespace (the tests check this with an independent validator).
//!
//! The zip container is written by hand rather than with a zip library, because the hostile
//! archives (duplicate names, headers that disagree, lying sizes, a 10 GiB bomb) are exactly
//! what a well-behaved library refuses to write.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::{Compress, Compression, FlushCompress};
use time::{Date, Duration};

use super::archive::{Limits, RATIO_FLOOR};
use super::format::{self, ArchiveName, DocKind, Folder, Party, RecordName, date_digits, oid};
pub use super::schemas::Edition;
use crate::config::CounterpartKind;

/// Whether the insurance card's 枝番 exists in the claims of `edition` (not in the 2007 set).
fn has_branch_code(edition: Edition) -> bool {
    edition != Edition::V2007
}

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
                    $(Violation::$name => super::finding::Rule::$rule.id(),)*
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
    fn adjust(self, spec: &Spec) -> Spec {
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
const OTHER_INSTITUTION: &str = "2717654327";
const UNKNOWN_INSURER: &str = "39999990";
const OTHER_INSURER: &str = "06130025";

/// The upload's file name and the top folder's name for `spec` broken by `violation`.
fn names(spec: &Spec, violation: Option<Violation>) -> (String, String) {
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

/// Writes a valid archive for `spec` to `out` (under the name `spec.archive_name()`).
pub fn write_valid<W: Write>(spec: &Spec, out: W) -> io::Result<W> {
    build(spec, None, &default_limits())?.0.finish(out)
}

/// Writes an archive for `spec` that breaks exactly the rule of `violation`, sized against
/// `limits`; returns where the finding must point. Upload it as `violation.file_name(spec)`.
pub fn write_violation<W: Write>(
    spec: &Spec,
    violation: Violation,
    limits: &Limits,
    out: W,
) -> io::Result<(W, Expected)> {
    let (plan, expected) = build(spec, Some(violation), limits)?;
    let expected = expected.unwrap_or(Expected {
        rule: violation.rule(),
        file: None,
        line: None,
    });
    Ok((plan.finish(out)?, expected))
}

fn default_limits() -> Limits {
    Limits::from(&crate::config::ArchiveLimits::default())
}

/// The 1-based line of the first line of `text` holding `marker`.
fn line_of(text: &str, marker: &str) -> Option<u32> {
    text.lines()
        .position(|l| l.contains(marker))
        .map(|i| i as u32 + 1)
}

fn expect(rule: &'static str, file: &str, line: Option<u32>) -> Option<Expected> {
    Some(Expected {
        rule,
        file: Some(file.to_owned()),
        line,
    })
}

const XML_DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

// ---------------------------------------------------------------------------------------
// The index and the summary.

/// The content of `ix08_V08.xml`, field by field, so that a violation can change one.
struct IndexFields {
    ns: &'static str,
    interaction: u8,
    created: String,
    sender_root: &'static str,
    sender: String,
    receiver_root: &'static str,
    receiver: String,
    service: u8,
    count: usize,
}

fn index_xml(f: &IndexFields) -> String {
    [
        XML_DECL.to_owned(),
        format!(r#"<index xmlns="{}">"#, f.ns),
        format!(r#"  <interactionType code="{}"/>"#, f.interaction),
        format!(r#"  <creationTime value="{}"/>"#, f.created),
        format!(
            r#"  <sender><id root="{}" extension="{}"/></sender>"#,
            f.sender_root, f.sender
        ),
        format!(
            r#"  <receiver><id root="{}" extension="{}"/></receiver>"#,
            f.receiver_root, f.receiver
        ),
        format!(r#"  <serviceEventType code="{}"/>"#, f.service),
        format!(r#"  <totalRecordCount value="{}"/>"#, f.count),
        "</index>".into(),
        String::new(),
    ]
    .join("\n")
}

/// The amounts of one claim, as the summary adds them up (format::SUMMARY_TOTALS).
#[derive(Debug, Clone, Copy, Default)]
struct Amounts {
    cost: u64,
    payment: u64,
    other: Option<u64>,
    claim: u64,
}

struct SummaryFields {
    ns: &'static str,
    service: u8,
    subjects: usize,
    cost: u64,
    payment: u64,
    other: Option<u64>,
    claim: u64,
}

impl SummaryFields {
    fn new(ns: &'static str, service: u8, claims: &[Amounts]) -> SummaryFields {
        SummaryFields {
            ns,
            service,
            subjects: claims.len(),
            cost: claims.iter().map(|a| a.cost).sum(),
            payment: claims.iter().map(|a| a.payment).sum(),
            other: claims.iter().filter_map(|a| a.other).reduce(|a, b| a + b),
            claim: claims.iter().map(|a| a.claim).sum(),
        }
    }
}

fn summary_xml(f: &SummaryFields) -> String {
    let mut lines = vec![
        XML_DECL.to_owned(),
        format!(r#"<summary xmlns="{}">"#, f.ns),
        format!(r#"  <serviceEventType code="{}"/>"#, f.service),
        format!(r#"  <totalSubjectCount value="{}"/>"#, f.subjects),
        format!(r#"  <totalCostAmount value="{}" currency="JPY"/>"#, f.cost),
        format!(
            r#"  <totalPaymentAmount value="{}" currency="JPY"/>"#,
            f.payment
        ),
    ];
    if let Some(other) = f.other {
        lines.push(format!(
            r#"  <totalPaymentByOtherProgram value="{other}" currency="JPY"/>"#
        ));
    }
    lines.extend([
        format!(
            r#"  <totalClaimAmount value="{}" currency="JPY"/>"#,
            f.claim
        ),
        "</summary>".into(),
        String::new(),
    ]);
    lines.join("\n")
}

// ---------------------------------------------------------------------------------------
// Invented persons.

/// A tiny deterministic generator: the same seed gives the same archive.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Invented names in katakana (as the exchange carries them).
const FAMILY: &[&str] = &[
    "ヤマダ",
    "タナカ",
    "スズキ",
    "サトウ",
    "タカハシ",
    "イトウ",
    "ワタナベ",
    "ナカムラ",
    "コバヤシ",
    "カトウ",
];
const GIVEN_MALE: &[&str] = &[
    "タロウ",
    "ケンジ",
    "ヒロシ",
    "マコト",
    "イチロウ",
    "ダイスケ",
];
const GIVEN_FEMALE: &[&str] = &["ハナコ", "ユミ", "アキコ", "ナオミ", "ケイコ", "サチコ"];

/// One invented person.
#[derive(Debug, Clone)]
struct Person {
    insurer: String,
    /// 被保険者証 記号, 番号, 枝番.
    symbol: String,
    number: String,
    branch: String,
    name: String,
    /// 1 male, 2 female.
    sex: u8,
    birth: String,
    /// 受診券 or 利用券 number, 11 digits.
    ticket: String,
    /// The checkup ticket of a guidance person.
    checkup_ticket: String,
    postal: String,
    /// The day of the checkup or of the guidance.
    examined: Date,
}

fn person(spec: &Spec, index: usize, rng: &mut Rng) -> Person {
    let sex = 1 + rng.below(2) as u8;
    let given = if sex == 1 { GIVEN_MALE } else { GIVEN_FEMALE };
    let name = format!("{} {}", rng.pick(FAMILY), rng.pick(given));
    // 特定健診 is for ages 40 to 74.
    let age = 40 + rng.below(35) as i32;
    let birth = format!(
        "{:04}{:02}{:02}",
        spec.created.year() - age - 1,
        1 + rng.below(12),
        1 + rng.below(28)
    );
    let year = spec.created.year() % 100;
    Person {
        insurer: spec.insurer_of(index).to_owned(),
        symbol: format!("{}", 100 + rng.below(900)),
        number: format!("{}", 1000 + rng.below(9_000_000)),
        branch: format!("{:02}", rng.below(3)),
        name,
        sex,
        birth,
        ticket: format!("{year:02}{:09}", rng.below(1_000_000_000)),
        checkup_ticket: format!("{year:02}{:09}", rng.below(1_000_000_000)),
        postal: format!("{:03}-{:04}", 100 + rng.below(900), rng.below(10_000)),
        examined: spec.created - Duration::days(1 + rng.below(30) as i64),
    }
}

/// The invented institution of a number.
fn institution_name(number: &str) -> &'static str {
    const NAMES: &[&str] = &[
        "みなと健診クリニック",
        "さくら内科医院",
        "ひかり総合健診センター",
        "あおば診療所",
    ];
    let sum: usize = number.bytes().map(usize::from).sum();
    NAMES[sum % NAMES.len()]
}

// ---------------------------------------------------------------------------------------
// The CDA documents (hc08, hg08).

/// Checkup items: JLAC10-style 17-character item codes (.1005), names, units, plausible
/// ranges in tenths, and the decimals written.
type Item = (&'static str, &'static str, &'static str, u64, u64, usize);

const CHECKUP_ITEMS: &[Item] = &[
    (HEIGHT, "身長", "cm", 1450, 1900, 1),
    (WEIGHT, "体重", "kg", 400, 1000, 1),
    (BMI, "BMI", "kg/m2", 170, 320, 1),
    ("9N016160100000001", "腹囲(実測)", "cm", 600, 1100, 1),
    (
        "9A751000000000001",
        "収縮期血圧(1回目)",
        "mmHg",
        1000,
        1700,
        0,
    ),
    (
        "9A761000000000001",
        "拡張期血圧(1回目)",
        "mmHg",
        600,
        1000,
        0,
    ),
    ("3F015000002327101", "空腹時中性脂肪", "mg/dL", 500, 3000, 0),
    (
        "3F070000002327101",
        "HDLコレステロール",
        "mg/dL",
        300,
        900,
        0,
    ),
    (
        "3F077000002327101",
        "LDLコレステロール",
        "mg/dL",
        700,
        1800,
        0,
    ),
    ("3D010000001926101", "空腹時血糖", "mg/dL", 700, 1300, 0),
    ("3D046000001906202", "HbA1c(NGSP値)", "%", 45, 80, 1),
    ("3B035000002327201", "AST(GOT)", "U/L", 100, 500, 0),
    ("3B045000002327201", "ALT(GPT)", "U/L", 50, 500, 0),
    ("3B090000002327101", "γ-GT(γ-GTP)", "U/L", 100, 800, 0),
];

const HEIGHT: &str = "9N001000000000001";
const WEIGHT: &str = "9N006000000000001";
const BMI: &str = "9N011000000000001";

/// BMI in tenths from height (cm) and weight (kg) in tenths, rounded.
fn bmi_tenths(height: u64, weight: u64) -> u64 {
    // weight/10 / (height/1000)^2 * 10 = weight * 1e6 / height^2
    (weight * 1_000_000 + height * height / 2) / (height * height)
}

/// Guidance items (.1006). The codes are of an invented shape: the published code list was
/// not at hand (UNCONFIRMED); the schema checks no more than that a code is there.
const GUIDANCE_ITEMS: &[Item] = &[
    ("1020000010", "初回面接実施時間", "min", 200, 900, 0),
    ("1020000020", "計画上の腹囲減少目標", "cm", 10, 50, 0),
    ("1020000030", "計画上の体重減少目標", "kg", 10, 50, 1),
    (
        "1020000040",
        "一日の削減目標エネルギー量",
        "kcal",
        1000,
        3000,
        0,
    ),
    ("1020000050", "支援ポイント数", "pt", 1800, 2400, 0),
];

/// Changes a violation makes to one document.
#[derive(Default)]
struct CdaTweak {
    encoding: Option<&'static str>,
    doctype: Option<&'static str>,
    malformed: bool,
    unknown_element: bool,
    effective: Option<String>,
    author_org: Option<String>,
    padding_lines: usize,
}

fn cda_xml(spec: &Spec, kind: DocKind, p: &Person, rng: &mut Rng, t: &CdaTweak) -> String {
    let created = date_digits(spec.created);
    let examined = date_digits(p.examined);
    let effective = t.effective.clone().unwrap_or_else(|| created.clone());
    let author = t.author_org.clone().unwrap_or_else(|| spec.sender.clone());
    let mut lines = vec![format!(
        r#"<?xml version="1.0" encoding="{}"?>"#,
        t.encoding.unwrap_or("UTF-8")
    )];
    if let Some(doctype) = t.doctype {
        lines.extend(doctype.lines().map(str::to_owned));
    }
    let (category, title, ticket_oid, ticket, section, section_title, items, item_oid) = match kind
    {
        DocKind::Checkup => (
            "10",
            "特定健診情報ファイル",
            oid::CHECKUP_TICKET,
            &p.ticket,
            "01010",
            "特定健診結果",
            CHECKUP_ITEMS,
            oid::CHECKUP_ITEM,
        ),
        DocKind::Guidance => (
            "21",
            "特定保健指導情報ファイル",
            oid::GUIDANCE_TICKET,
            &p.ticket,
            "01030",
            "特定保健指導結果",
            GUIDANCE_ITEMS,
            oid::GUIDANCE_ITEM,
        ),
    };
    let org_postal = format!("{}-{}", &author[..3], &author[3..7]);
    lines.extend([
        format!(
            r#"<ClinicalDocument xmlns="{}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#,
            format::CDA_NS
        ),
        r#"  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>"#.into(),
        r#"  <templateId root="1.2.392.200119.6.1009" extension="1"/>"#.into(),
        format!(
            r#"  <id root="{}.1{}" extension="{created}{:06}"/>"#,
            spec.sender_party().oid(),
            spec.sender,
            rng.below(1_000_000)
        ),
        format!(
            r#"  <code code="{category}" codeSystem="{}"/>"#,
            oid::REPORT_CATEGORY
        ),
        format!("  <title>{title}</title>"),
        format!(r#"  <effectiveTime value="{effective}"/>"#),
        r#"  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>"#.into(),
        r#"  <languageCode code="ja-JP"/>"#.into(),
        "  <recordTarget>".into(),
        "    <patientRole>".into(),
        format!(
            r#"      <id root="{}" extension="{}"/>"#,
            oid::INSURER,
            p.insurer
        ),
        format!(
            r#"      <id root="{}" extension="{}"/>"#,
            oid::CARD_SYMBOL,
            p.symbol
        ),
        format!(
            r#"      <id root="{}" extension="{}"/>"#,
            oid::CARD_NUMBER,
            p.number
        ),
        format!(
            r#"      <id root="{}" extension="{}"/>"#,
            oid::CARD_BRANCH,
            p.branch
        ),
        format!(
            "      <addr><postalCode>{}</postalCode></addr>",
            p.postal
        ),
        "      <patient>".into(),
        format!(r#"        <name use="SYL">{}</name>"#, p.name),
        format!(
            r#"        <administrativeGenderCode code="{}" codeSystem="{}"/>"#,
            p.sex,
            oid::SEX
        ),
        format!(r#"        <birthTime value="{}"/>"#, p.birth),
        "      </patient>".into(),
        "    </patientRole>".into(),
        "  </recordTarget>".into(),
        "  <author>".into(),
        format!(r#"    <time value="{created}"/>"#),
        "    <assignedAuthor>".into(),
        r#"      <id nullFlavor="NI"/>"#.into(),
        "      <representedOrganization>".into(),
        format!(
            r#"        <id root="{}" extension="{author}"/>"#,
            oid::INSTITUTION
        ),
        format!("        <name>{}</name>", institution_name(&author)),
        format!(
            r#"        <telecom value="tel:03-0000-{}"/>"#,
            &author[author.len() - 4..]
        ),
        format!(
            "        <addr><postalCode>{org_postal}</postalCode>東京都千代田区架空町一丁目{}番</addr>",
            1 + author.bytes().map(u32::from).sum::<u32>() % 20
        ),
        "      </representedOrganization>".into(),
        "    </assignedAuthor>".into(),
        "  </author>".into(),
        "  <custodian>".into(),
        "    <assignedCustodian>".into(),
        "      <representedCustodianOrganization>".into(),
        format!(
            r#"        <id root="{}" extension="{}"/>"#,
            oid::INSTITUTION,
            spec.sender
        ),
        format!(
            "        <name>{}</name>",
            institution_name(&spec.sender)
        ),
        "      </representedCustodianOrganization>".into(),
        "    </assignedCustodian>".into(),
        "  </custodian>".into(),
        r#"  <participant typeCode="HLD">"#.into(),
        r#"    <associatedEntity classCode="IDENT">"#.into(),
        format!(
            r#"      <id root="{ticket_oid}.1{}" extension="{ticket}"/>"#,
            p.insurer
        ),
        "    </associatedEntity>".into(),
        "  </participant>".into(),
        "  <documentationOf>".into(),
        "    <serviceEvent>".into(),
        "      <effectiveTime>".into(),
        format!(r#"        <low value="{examined}"/>"#),
        format!(r#"        <high value="{examined}"/>"#),
        "      </effectiveTime>".into(),
        "    </serviceEvent>".into(),
        "  </documentationOf>".into(),
        "  <component>".into(),
        "    <structuredBody>".into(),
        "      <component>".into(),
        "        <section>".into(),
        format!(
            r#"          <code code="{section}" codeSystem="{}"/>"#,
            oid::SECTION
        ),
        format!("          <title>{section_title}</title>"),
    ]);
    // `fixed`: the value in tenths, when it follows from others (BMI from height and weight).
    let observation = |rng: &mut Rng,
                       &(code, name, unit, lo, hi, decimals): &Item,
                       fixed: Option<u64>| {
        let tenths = fixed.unwrap_or_else(|| lo + rng.below(hi - lo));
        let value = if decimals == 0 {
            format!("{}", tenths / 10)
        } else {
            format!("{}.{}", tenths / 10, tenths % 10)
        };
        let line = format!(
            r#"          <entry><observation classCode="OBS" moodCode="EVN"><code code="{code}" codeSystem="{item_oid}" displayName="{name}"/><value xsi:type="PQ" value="{value}" unit="{unit}"/></observation></entry>"#
        );
        (line, tenths)
    };
    for i in 0..t.padding_lines {
        lines.push(observation(rng, &items[i % items.len()], None).0);
    }
    if t.unknown_element {
        lines.push("          <remark>not part of the schema</remark>".into());
    }
    let (mut height, mut weight) = (None, None);
    for item in items {
        let fixed = match (item.0, height, weight) {
            (BMI, Some(h), Some(w)) => Some(bmi_tenths(h, w)),
            _ => None,
        };
        let (line, tenths) = observation(rng, item, fixed);
        match item.0 {
            HEIGHT => height = Some(tenths),
            WEIGHT => weight = Some(tenths),
            _ => {}
        }
        lines.push(line);
    }
    lines.extend([
        "        </section>".into(),
        "      </component>".into(),
        "    </structuredBody>".into(),
    ]);
    if !t.malformed {
        lines.push("  </component>".into());
    }
    lines.push("</ClinicalDocument>".into());
    lines.push(String::new());
    lines.join("\n")
}

// ---------------------------------------------------------------------------------------
// The claims (cc08, gc08).

/// Changes a violation makes to one claim.
#[derive(Default)]
struct ClaimTweak {
    namespace: Option<&'static str>,
}

fn insurance_card(p: &Person, edition: Edition) -> Vec<String> {
    let mut lines = vec![
        "    <insuranceCard>".to_owned(),
        format!(
            r#"      <insurerNumber root="{}" extension="{}"/>"#,
            oid::INSURER,
            p.insurer
        ),
        format!(
            r#"      <symbol root="{}" extension="{}"/>"#,
            oid::CARD_SYMBOL,
            p.symbol
        ),
        format!(
            r#"      <number root="{}" extension="{}"/>"#,
            oid::CARD_NUMBER,
            p.number
        ),
    ];
    if has_branch_code(edition) {
        lines.push(format!(
            r#"      <branchCode root="{}" extension="{}"/>"#,
            oid::CARD_BRANCH,
            p.branch
        ));
    }
    lines.push("    </insuranceCard>".into());
    lines
}

/// The last day of the fiscal year of `d` (tickets are valid until then).
fn fiscal_year_end(d: Date) -> String {
    let year = if u8::from(d.month()) >= 4 {
        d.year() + 1
    } else {
        d.year()
    };
    format!("{year:04}0331")
}

fn claim_xml(
    spec: &Spec,
    p: &Person,
    edition: Edition,
    rng: &mut Rng,
    t: &ClaimTweak,
) -> (String, Amounts) {
    let ns = t.namespace.unwrap_or(edition.namespace());
    let root = spec.kind.claims_root();
    let mut lines = vec![XML_DECL.to_owned(), format!(r#"<{root} xmlns="{ns}">"#)];
    lines.push("  <encounter>".into());
    lines.push(format!(
        r#"    <serviceEventType code="{}"/>"#,
        spec.kind.service_event()
    ));
    if spec.kind == DocKind::Guidance {
        // 動機付け支援, 初回.
        lines.push(r#"    <guidanceLevel code="2"/>"#.into());
        lines.push(r#"    <guidanceTiming code="1"/>"#.into());
    }
    lines.push("  </encounter>".into());
    lines.push("  <subjectPerson>".into());
    lines.push("    <performerOrganization>".into());
    lines.push(format!(
        r#"      <id root="{}" extension="{}"/>"#,
        oid::INSTITUTION,
        spec.sender
    ));
    lines.push("    </performerOrganization>".into());
    lines.extend(insurance_card(p, edition));
    lines.push(format!("    <name>{}</name>", p.name));
    lines.push(format!(
        "    <addr><postalCode>{}</postalCode></addr>",
        p.postal
    ));
    lines.push(format!(r#"    <birthTime value="{}"/>"#, p.birth));
    lines.push(format!(r#"    <administrativeGender code="{}"/>"#, p.sex));
    lines.push("  </subjectPerson>".into());
    let until = fiscal_year_end(p.examined);
    let amounts = match spec.kind {
        DocKind::Checkup => {
            // 基本的な健診 at a unit price; sometimes a detailed item (心電図 …, code 1–3);
            // a fixed copayment or none; sometimes a part paid by another programme.
            let basic = 7000 + 100 * rng.below(20);
            let detail = (rng.below(3) == 0).then(|| (1 + rng.below(3), 1300 + 100 * rng.below(5)));
            let copay = if rng.below(2) == 0 {
                0
            } else {
                500 + 500 * rng.below(3)
            };
            let other = (rng.below(4) == 0).then_some(1000);
            let cost = basic + detail.map_or(0, |(_, a)| a);
            let amounts = Amounts {
                cost,
                payment: copay,
                other,
                claim: cost - copay - other.unwrap_or(0),
            };
            lines.extend([
                "  <checkupCard>".to_owned(),
                format!(
                    r#"    <id root="{}" extension="{}"/>"#,
                    oid::CHECKUP_TICKET,
                    p.ticket
                ),
                format!("    <effectiveTime><high value=\"{until}\"/></effectiveTime>"),
            ]);
            if copay == 0 {
                lines.push(r#"    <chargeTypeBasic code="1"/>"#.into());
            } else {
                lines.push(format!(
                    r#"    <chargeTypeBasic code="2"><amount value="{copay:06}"/></chargeTypeBasic>"#
                ));
            }
            lines.push(r#"    <chargeTypeDetail code="1"/>"#.into());
            lines.push("  </checkupCard>".into());
            lines.push("  <settlement>".into());
            lines.push(r#"    <claimType code="1"/>"#.into());
            lines.push(r#"    <commissionType code="1"/>"#.into());
            lines.push(format!(
                r#"    <unitPriceBasic><amount value="{basic}" currency="JPY"/></unitPriceBasic>"#
            ));
            if let Some((code, amount)) = detail {
                lines.push(format!(
                    r#"    <unitPriceDetail><amount value="{amount}" currency="JPY"/><observation code="{code}"/></unitPriceDetail>"#
                ));
            }
            if copay > 0 {
                lines.push(format!(
                    r#"    <paymentForBasic><amount value="{copay:06}"/></paymentForBasic>"#
                ));
            }
            lines.push(format!(
                r#"    <unitAmount value="{}" currency="JPY"/>"#,
                amounts.cost
            ));
            lines.push(format!(
                r#"    <paymentAmount value="{}" currency="JPY"/>"#,
                amounts.payment
            ));
            if let Some(other) = other {
                lines.push(format!(
                    r#"    <paymentByOtherProgram value="{other}" currency="JPY"/>"#
                ));
            }
            lines.push(format!(
                r#"    <claimAmount value="{}" currency="JPY"/>"#,
                amounts.claim
            ));
            amounts
        }
        DocKind::Guidance => {
            // 動機付け支援: the first interview is paid 80 % of the unit price.
            let unit = 20000 + 1000 * rng.below(6);
            let rate = 80;
            let calculated = unit * rate / 100;
            let copay = if rng.below(2) == 0 { 0 } else { 1000 };
            let amounts = Amounts {
                cost: calculated,
                payment: copay,
                other: None,
                claim: calculated - copay,
            };
            lines.extend([
                "  <healthGuidanceCard>".to_owned(),
                format!(
                    r#"    <id root="{}" extension="{}"/>"#,
                    oid::GUIDANCE_TICKET,
                    p.ticket
                ),
                format!(
                    r#"    <checkupCardId root="{}" extension="{}"/>"#,
                    oid::CHECKUP_TICKET,
                    p.checkup_ticket
                ),
                format!("    <effectiveTime><high value=\"{until}\"/></effectiveTime>"),
                r#"    <copayment code="1"/>"#.into(),
                "  </healthGuidanceCard>".into(),
                "  <settlement>".into(),
                format!(
                    r#"    <unitPrice><amount value="{unit}" currency="JPY"/></unitPrice>"#
                ),
                format!(r#"    <paymentRate value="{rate}" unit="%"/>"#),
                format!(
                    r#"    <calculatedAmount value="{calculated}" currency="JPY"/>"#
                ),
                format!(
                    r#"    <payment><status code="{}"/><amount value="{copay}" currency="JPY"/></payment>"#,
                    if copay == 0 { 2 } else { 1 }
                ),
                format!(
                    r#"    <claimAmount value="{}" currency="JPY"/>"#,
                    amounts.claim
                ),
            ]);
            amounts
        }
    };
    lines.push("  </settlement>".into());
    lines.push(format!("</{root}>"));
    lines.push(String::new());
    (lines.join("\n"), amounts)
}

// ---------------------------------------------------------------------------------------
// The archive.

/// The files of a schema set directory, by their path below it, sorted.
fn schema_files(dir: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) -> io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if e.file_type()?.is_dir() {
                walk(&path, &format!("{prefix}{name}/"), out)?;
            } else {
                out.push((format!("{prefix}{name}"), std::fs::read(&path)?));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    if out.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{}: no schema files", dir.display()),
        ));
    }
    Ok(out)
}

/// The entries of an archive, named inside its top folder.
struct Builder {
    plan: Plan,
    /// `<name>/`, or empty when the files go to the zip root.
    top: String,
}

impl Builder {
    fn bytes(&mut self, path: &str, data: Vec<u8>) {
        let name = format!("{}{path}", self.top);
        self.plan.bytes(&name, data);
    }

    fn dir(&mut self, path: &str) {
        let name = format!("{}{path}", self.top);
        self.plan.dir(&name);
    }

    fn entry(&mut self, path: &str, body: Body) -> &mut Entry {
        let name = format!("{}{path}", self.top);
        self.plan.entries.push(Entry::new(&name, body));
        self.plan.entries.last_mut().expect("just pushed")
    }
}

fn build(
    spec: &Spec,
    violation: Option<Violation>,
    limits: &Limits,
) -> io::Result<(Plan, Option<Expected>)> {
    use Violation::*;
    let s = violation.map_or_else(|| spec.clone(), |v| v.adjust(spec));
    if s.kind == DocKind::Guidance && s.claims && s.editions.claims == Edition::V2007 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the 2007 edition has no guidance claims",
        ));
    }
    let mut rng = Rng(s.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (_, folder) = names(spec, violation);
    let mut b = Builder {
        plan: Plan::default(),
        top: if violation == Some(TopFolder) {
            String::new()
        } else {
            format!("{folder}/")
        },
    };
    let mut expected = None;
    if !b.top.is_empty() {
        b.plan.dir(&b.top.clone());
    }
    let persons = if violation == Some(Empty) {
        0
    } else {
        s.persons.max(1)
    };
    // The person a violation concerns is the last one, so that it is not found by accident in
    // the first file read.
    let target = persons.saturating_sub(1);
    let people: Vec<Person> = (0..persons).map(|i| person(&s, i, &mut rng)).collect();

    // DATA/
    let mut files = 0usize;
    let mut data_entries: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, p) in people.iter().enumerate() {
        let mut name = s.record_name(Folder::Data, i);
        let mut kind = s.kind;
        let mut p = p.clone();
        let mut tweak = CdaTweak {
            padding_lines: if i == 0 { s.padding_lines } else { 0 },
            ..CdaTweak::default()
        };
        let mut marker = None;
        if i == target {
            match violation {
                Some(Encoding) => {
                    tweak.encoding = Some("Shift_JIS");
                    marker = Some("<?xml");
                }
                Some(Dtd) => {
                    tweak.doctype = Some(
                        "<!DOCTYPE ClinicalDocument [\n  <!ENTITY xxe SYSTEM \"file:///etc/passwd\">\n]>",
                    );
                    marker = Some("<!DOCTYPE");
                }
                Some(BillionLaughs) => {
                    tweak.doctype = Some(BILLION_LAUGHS);
                    marker = Some("<!DOCTYPE");
                }
                Some(Malformed) => {
                    tweak.malformed = true;
                    marker = Some("</ClinicalDocument>");
                }
                Some(XsdInvalid) => {
                    tweak.unknown_element = true;
                    marker = Some("<remark>");
                }
                Some(DataSender) => {
                    tweak.author_org = Some(OTHER_INSTITUTION.into());
                    marker = Some(OTHER_INSTITUTION);
                }
                Some(DataInsurer) => {
                    p.insurer = OTHER_INSURER.into();
                    marker = Some(OTHER_INSURER);
                }
                Some(DateInvalid) => {
                    p.birth = "19650231".into();
                    marker = Some("<birthTime");
                }
                Some(DateFuture) => {
                    let future = s.created.replace_year(s.created.year() + 2);
                    tweak.effective = Some(date_digits(future.unwrap_or(s.created)));
                    marker = Some("  <effectiveTime value=");
                }
                Some(DataKind) => {
                    kind = match s.kind {
                        DocKind::Checkup => DocKind::Guidance,
                        DocKind::Guidance => DocKind::Checkup,
                    };
                    name.kind = kind;
                }
                Some(NameSender) => name.sender = OTHER_INSTITUTION.into(),
                Some(NameMismatch) => {
                    name.date = date_digits(s.created.previous_day().unwrap_or(s.created))
                }
                _ => {}
            }
        }
        let mut path = name.path();
        if i == target && violation == Some(NamePattern) {
            // As seen in the wild: the pattern for 21 characters, then something else.
            path = format!(
                "{}{}{}_0059_00280081.xml",
                format::DATA_DIR,
                s.kind.data_prefix(),
                s.sender
            );
        }
        let text = cda_xml(&s, kind, &p, &mut rng, &tweak);
        if i == target {
            let line = marker.and_then(|m| line_of(&text, m));
            match violation {
                Some(v) if marker.is_some() => expected = expect(v.rule(), &path, line),
                Some(v @ (DataKind | NameSender | NamePattern | NameMismatch)) => {
                    expected = expect(v.rule(), &path, None)
                }
                _ => {}
            }
        }
        if i == 0 && violation == Some(NameSerial) {
            expected = expect(NameSerial.rule(), &path, None);
        }
        data_entries.push((path, text.into_bytes()));
    }
    if let Some(LyingSize) = violation {
        // Zeros whose headers claim a tiny entry: only reading finds out. The index counts it,
        // so only the size lies.
        let name = s.record_name(Folder::Data, persons);
        data_entries.push((name.path(), Vec::new()));
    }
    files += data_entries.len();

    // CLAIMS/
    let mut claim_entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut amounts = Vec::new();
    if s.claims {
        for (i, p) in people.iter().enumerate() {
            let mut edition = s.editions.claims;
            let mut tweak = ClaimTweak::default();
            if i == target {
                match violation {
                    Some(EditionUnknown) => {
                        tweak.namespace = Some("http://tokuteikenshin.jp/checkup/2013")
                    }
                    Some(EditionNonCurrent | EditionNotAccepted) => edition = Edition::V2007,
                    Some(NameUnpaired) => continue,
                    _ => {}
                }
            }
            let path = s.record_name(Folder::Claims, i).path();
            let (text, a) = claim_xml(&s, p, edition, &mut rng, &tweak);
            if i == target
                && matches!(
                    violation,
                    Some(EditionUnknown | EditionNonCurrent | EditionNotAccepted)
                )
            {
                let v = violation.expect("matched");
                expected = expect(v.rule(), &path, Some(2));
            }
            amounts.push(a);
            claim_entries.push((path, text.into_bytes()));
        }
        if violation == Some(NameUnpaired) {
            expected = expect(
                NameUnpaired.rule(),
                &s.record_name(Folder::Data, target).path(),
                None,
            );
        }
    }
    files += claim_entries.len();

    // ix08_V08.xml
    let sender_party = s.sender_party();
    let mut index = IndexFields {
        ns: s.editions.index.namespace(),
        interaction: s.interaction_type,
        created: date_digits(s.created),
        sender_root: sender_party.oid(),
        sender: s.sender.clone(),
        receiver_root: s.receiver_party.oid(),
        receiver: s.receiver.clone(),
        service: s.kind.service_event(),
        count: files,
    };
    let index_marker = match violation {
        Some(InteractionType) => {
            index.interaction = 7;
            Some("interactionType")
        }
        Some(SenderNumber) => {
            index.sender_root = oid::INSURER;
            index.interaction = default_interaction_type(Party::Insurer, s.receiver_party);
            Some("<sender>")
        }
        Some(ReceiverNumber) => {
            index.receiver_root = oid::LOCAL_GOVERNMENT;
            index.interaction = 9;
            Some("<receiver>")
        }
        Some(NumberMalformed) => {
            index.receiver = s.receiver[1..].into();
            Some("<receiver>")
        }
        Some(CheckDigit) => {
            let mut digits = s.receiver.clone().into_bytes();
            if let Some(last) = digits.last_mut() {
                *last = b'0' + (*last - b'0' + 1) % 10;
            }
            index.receiver = String::from_utf8(digits).unwrap_or_default();
            Some("<receiver>")
        }
        Some(SenderMismatch) => Some("<sender>"),
        Some(ReceiverUnknown) => Some("<receiver>"),
        Some(IndexCount) => {
            index.count += 1;
            Some("totalRecordCount")
        }
        _ => None,
    };
    let index_text = index_xml(&index);
    if let Some(marker) = index_marker {
        expected = expect(
            violation.map_or("", Violation::rule),
            format::INDEX,
            line_of(&index_text, marker),
        );
    }
    if violation == Some(Missing) {
        expected = expect(Missing.rule(), format::INDEX, None);
    } else {
        b.bytes(format::INDEX, index_text.into_bytes());
    }

    // su08_V08.xml
    if s.claims || violation == Some(ClaimsSummary) {
        let mut summary = SummaryFields::new(
            s.editions.summary.namespace(),
            s.kind.service_event(),
            &amounts,
        );
        let marker = match violation {
            Some(SummaryTotals) => {
                summary.claim += 1;
                Some("totalClaimAmount")
            }
            Some(SummaryCount) => {
                summary.subjects += 1;
                Some("totalSubjectCount")
            }
            Some(ServiceEventMismatch) => {
                summary.service = match s.kind {
                    DocKind::Checkup => DocKind::Guidance,
                    DocKind::Guidance => DocKind::Checkup,
                }
                .service_event();
                Some("serviceEventType")
            }
            _ => None,
        };
        let text = summary_xml(&summary);
        if let (Some(v), Some(m)) = (violation, marker) {
            expected = expect(v.rule(), format::SUMMARY, line_of(&text, m));
        }
        if violation == Some(ClaimsSummary) {
            expected = expect(ClaimsSummary.rule(), format::SUMMARY, None);
        }
        b.bytes(format::SUMMARY, text.into_bytes());
    }

    // The folders.
    b.dir(format::DATA_DIR);
    let last = data_entries.len().saturating_sub(1);
    for (i, (path, bytes)) in data_entries.into_iter().enumerate() {
        let body = if violation == Some(LyingSize) && i == last {
            Body::Zeros(10 << 30)
        } else {
            Body::Bytes(bytes)
        };
        let entry = b.entry(&path, body);
        if i == target {
            match violation {
                Some(Encrypted) => {
                    entry.encrypted = true;
                    expected = expect(Encrypted.rule(), &path, None);
                }
                Some(Method) => {
                    entry.method = Packing::Raw(12);
                    expected = expect(Method.rule(), &path, None);
                }
                Some(HeaderMismatch) => {
                    // The finding concerns the directory as a whole: no file.
                    entry.local_name = Some(format!("{folder}/{}x.xml", format::DATA_DIR));
                }
                Some(Corrupt) => {
                    entry.bad_crc = true;
                    expected = expect(Corrupt.rule(), &path, None);
                }
                _ => {}
            }
        }
        if violation == Some(LyingSize) && i == last {
            entry.declared_size = Some(4096);
            expected = expect(LyingSize.rule(), &path, None);
        }
    }
    if !claim_entries.is_empty() {
        b.dir(format::CLAIMS_DIR);
        for (path, bytes) in claim_entries {
            b.bytes(&path, bytes);
        }
    }
    if let Some(dir) = &s.xsd_from {
        b.dir(format::XSD_DIR);
        for (path, bytes) in schema_files(dir)? {
            b.bytes(&format!("{}{path}", format::XSD_DIR), bytes);
        }
    }
    for (path, bytes) in &s.extra_files {
        b.bytes(path, bytes.clone());
    }

    // Violations of the container.
    let zeros = |size: u64| Body::Zeros(size.div_ceil(ZERO_CHUNK) * ZERO_CHUNK);
    match violation {
        Some(Unreadable) => b.plan.truncate = true,
        Some(Traversal) => {
            b.plan.bytes("../outside.xml", b"<a/>".to_vec());
            expected = expect(Traversal.rule(), "../outside.xml", None);
        }
        Some(BadName) => {
            b.bytes("XSD/a\u{7}b.xsd", b"<a/>".to_vec());
            expected = expect(BadName.rule(), "XSD/a\u{7}b.xsd", None);
        }
        Some(Duplicate) => {
            b.bytes("IX08_V08.XML", b"<a/>".to_vec());
            expected = expect(Duplicate.rule(), "IX08_V08.XML", None);
        }
        Some(TooManyEntries) => {
            for i in 0..=limits.max_entries {
                b.bytes(&format!("XSD/{i}.xsd"), Vec::new());
            }
        }
        Some(EntryTooLarge) => {
            // The classic bomb: 10 GiB of zeros, about 10 MiB compressed, sizes declared
            // honestly (zip64).
            let size = (10u64 << 30).max(limits.max_entry_size + 1);
            b.entry("XSD/zeros.xsd", zeros(size));
            expected = expect(EntryTooLarge.rule(), "XSD/zeros.xsd", None);
        }
        Some(Ratio) => {
            let size = match limits.max_entry_size.min(50 << 20) {
                small if small <= RATIO_FLOOR => RATIO_FLOOR + ZERO_CHUNK,
                size => size,
            };
            let size = size / ZERO_CHUNK * ZERO_CHUNK;
            b.entry("XSD/zeros.xsd", Body::Zeros(size));
            expected = expect(Ratio.rule(), "XSD/zeros.xsd", None);
        }
        Some(TotalTooLarge) => {
            // Entries each within the per-entry limit and the ratio, together over the total.
            let each = limits
                .max_entry_size
                .min(limits.max_total_size / 2 + 1)
                .max(1);
            let count = limits.max_total_size / each + 1;
            for i in 0..count {
                let body = Body::Digits(each, rng.next());
                b.entry(&format!("XSD/part{i}.xsd"), body);
            }
        }
        Some(Nested) => {
            b.bytes("XSD/schemas.zip", b"PK\x03\x04".to_vec());
            expected = expect(Nested.rule(), "XSD/schemas.zip", None);
        }
        Some(Unexpected) => {
            b.bytes("notes.txt", b"see attached".to_vec());
            expected = expect(Unexpected.rule(), "notes.txt", None);
        }
        _ => {}
    }
    Ok((b.plan, expected))
}

/// The document that expands a few hundred bytes into gigabytes when entities are replaced.
const BILLION_LAUGHS: &str = r#"<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>"#;

// ---------------------------------------------------------------------------------------
// The zip writer.

/// Zeros are compressed in chunks of this size, each flushed to a byte boundary, so that one
/// compressed chunk repeated makes a valid stream of any multiple of it.
const ZERO_CHUNK: u64 = 1 << 20;

enum Body {
    Bytes(Vec<u8>),
    /// This many zeros, compressed as repeated chunks without holding them.
    Zeros(u64),
    /// This many bytes of random digits (compressing about 2:1), made when written.
    Digits(u64, u64),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Packing {
    Deflate,
    /// Another method number, with the bytes stored as they are.
    Raw(u16),
}

struct Entry {
    name: String,
    /// A different name in the local header than in the central directory.
    local_name: Option<String>,
    body: Body,
    method: Packing,
    encrypted: bool,
    bad_crc: bool,
    /// A different uncompressed size in both headers than the data has.
    declared_size: Option<u64>,
}

impl Entry {
    fn new(name: &str, body: Body) -> Entry {
        Entry {
            name: name.to_owned(),
            local_name: None,
            body,
            method: Packing::Deflate,
            encrypted: false,
            bad_crc: false,
            declared_size: None,
        }
    }
}

#[derive(Default)]
struct Plan {
    entries: Vec<Entry>,
    /// Cut the archive short, so that it has no end record.
    truncate: bool,
}

impl Plan {
    fn bytes(&mut self, name: &str, data: Vec<u8>) {
        self.entries.push(Entry::new(name, Body::Bytes(data)));
    }

    fn dir(&mut self, name: &str) {
        let mut e = Entry::new(name, Body::Bytes(Vec::new()));
        e.method = Packing::Raw(0);
        self.entries.push(e);
    }

    fn finish<W: Write>(self, out: W) -> io::Result<W> {
        let mut zip = ZipOut {
            out: Counting { inner: out, pos: 0 },
            central: Vec::new(),
            count: 0,
        };
        let truncate = self.truncate;
        for entry in self.entries {
            zip.add(entry)?;
        }
        if truncate {
            return Ok(zip.out.inner);
        }
        zip.finish()
    }
}

struct Counting<W> {
    inner: W,
    pos: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct ZipOut<W: Write> {
    out: Counting<W>,
    central: Vec<u8>,
    count: u64,
}

/// DOS date of 2026-11-20, midnight: the stamp of every generated entry.
const DOS_DATE: u16 = ((2026 - 1980) << 9) | (11 << 5) | 20;
const FLAG_UTF8: u16 = 1 << 11;
const MAX32: u64 = 0xFFFF_FFFF;

fn deflate_all(data: &[u8], flush: FlushCompress) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    loop {
        let consumed = c.total_in() as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .expect("deflate of memory cannot fail");
        let done = c.total_in() as usize == data.len();
        match flush {
            FlushCompress::Finish if status == flate2::Status::StreamEnd => return out,
            FlushCompress::Finish => {}
            _ if done && out.capacity() > out.len() => return out,
            _ => {}
        }
    }
}

impl<W: Write> ZipOut<W> {
    fn add(&mut self, entry: Entry) -> io::Result<()> {
        let offset = self.out.pos;
        let digits;
        let body = match &entry.body {
            Body::Digits(n, seed) => {
                let mut rng = Rng(*seed | 1);
                let mut text = Vec::with_capacity(*n as usize + 21);
                while (text.len() as u64) < *n {
                    text.extend_from_slice(format!("{:020}\n", rng.next()).as_bytes());
                }
                text.truncate(*n as usize);
                digits = Body::Bytes(text);
                &digits
            }
            other => other,
        };
        let (crc, size, data, zero_chunks) = match body {
            Body::Digits(..) => unreachable!("made into bytes above"),
            Body::Bytes(b) => {
                let crc = crc32fast::hash(b);
                let data = match entry.method {
                    Packing::Deflate if !b.is_empty() => deflate_all(b, FlushCompress::Finish),
                    Packing::Deflate => vec![0x03, 0x00],
                    Packing::Raw(_) => b.clone(),
                };
                (crc, b.len() as u64, data, 0)
            }
            Body::Zeros(n) => {
                let chunk = deflate_all(&vec![0u8; ZERO_CHUNK as usize], FlushCompress::Full);
                let mut one = crc32fast::Hasher::new();
                one.update(&vec![0u8; ZERO_CHUNK as usize]);
                let mut all = crc32fast::Hasher::new();
                for _ in 0..n / ZERO_CHUNK {
                    all.combine(&one);
                }
                (all.finalize(), *n, chunk, n / ZERO_CHUNK)
            }
        };
        let compressed = if zero_chunks > 0 {
            data.len() as u64 * zero_chunks + 2
        } else {
            data.len() as u64
        };
        let crc = if entry.bad_crc { !crc } else { crc };
        let size = entry.declared_size.unwrap_or(size);
        let method = match entry.method {
            Packing::Deflate => 8,
            Packing::Raw(m) => m,
        };
        let zip64 = size >= MAX32 || compressed >= MAX32 || offset >= MAX32;
        let flags = FLAG_UTF8 | u16::from(entry.encrypted);
        let version: u16 = if zip64 { 45 } else { 20 };
        let local_name = entry.local_name.as_deref().unwrap_or(&entry.name);

        let mut local = Vec::new();
        local.extend_from_slice(b"PK\x03\x04");
        put16(&mut local, version);
        put16(&mut local, flags);
        put16(&mut local, method);
        put16(&mut local, 0);
        put16(&mut local, DOS_DATE);
        put32(&mut local, crc);
        let mut extra = Vec::new();
        if zip64 {
            put32(&mut local, MAX32 as u32);
            put32(&mut local, MAX32 as u32);
            put16(&mut extra, 1);
            put16(&mut extra, 16);
            put64(&mut extra, size);
            put64(&mut extra, compressed);
        } else {
            put32(&mut local, compressed as u32);
            put32(&mut local, size as u32);
        }
        put16(&mut local, local_name.len() as u16);
        put16(&mut local, extra.len() as u16);
        local.extend_from_slice(local_name.as_bytes());
        local.extend_from_slice(&extra);
        self.out.write_all(&local)?;
        if zero_chunks > 0 {
            for _ in 0..zero_chunks {
                self.out.write_all(&data)?;
            }
            self.out.write_all(&[0x03, 0x00])?;
        } else {
            self.out.write_all(&data)?;
        }

        let is_dir = entry.name.ends_with('/');
        let c = &mut self.central;
        c.extend_from_slice(b"PK\x01\x02");
        put16(c, 0x031E);
        put16(c, version);
        put16(c, flags);
        put16(c, method);
        put16(c, 0);
        put16(c, DOS_DATE);
        put32(c, crc);
        let mut extra = Vec::new();
        if zip64 {
            put32(c, MAX32 as u32);
            put32(c, MAX32 as u32);
            put16(&mut extra, 1);
            put16(&mut extra, 24);
            put64(&mut extra, size);
            put64(&mut extra, compressed);
            put64(&mut extra, offset);
        } else {
            put32(c, compressed as u32);
            put32(c, size as u32);
        }
        put16(c, entry.name.len() as u16);
        put16(c, extra.len() as u16);
        put16(c, 0);
        put16(c, 0);
        put16(c, 0);
        let mode: u32 = if is_dir { 0o040755 } else { 0o100644 };
        put32(c, (mode << 16) | u32::from(is_dir) << 4);
        put32(c, if zip64 { MAX32 as u32 } else { offset as u32 });
        c.extend_from_slice(entry.name.as_bytes());
        c.extend_from_slice(&extra);
        self.count += 1;
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        let cd_offset = self.out.pos;
        let cd_size = self.central.len() as u64;
        self.out.write_all(&std::mem::take(&mut self.central))?;
        let zip64 = self.count >= 0xFFFF || cd_offset >= MAX32 || cd_size >= MAX32;
        let mut tail = Vec::new();
        if zip64 {
            let record = self.out.pos;
            tail.extend_from_slice(b"PK\x06\x06");
            put64(&mut tail, 44);
            put16(&mut tail, 45);
            put16(&mut tail, 45);
            put32(&mut tail, 0);
            put32(&mut tail, 0);
            put64(&mut tail, self.count);
            put64(&mut tail, self.count);
            put64(&mut tail, cd_size);
            put64(&mut tail, cd_offset);
            tail.extend_from_slice(b"PK\x06\x07");
            put32(&mut tail, 0);
            put64(&mut tail, record);
            put32(&mut tail, 1);
        }
        tail.extend_from_slice(b"PK\x05\x06");
        put16(&mut tail, 0);
        put16(&mut tail, 0);
        let count16 = if zip64 { 0xFFFF } else { self.count as u16 };
        put16(&mut tail, count16);
        put16(&mut tail, count16);
        put32(&mut tail, cd_size.min(MAX32) as u32);
        put32(
            &mut tail,
            if zip64 {
                MAX32 as u32
            } else {
                cd_offset as u32
            },
        );
        put16(&mut tail, 0);
        self.out.write_all(&tail)?;
        self.out.flush()?;
        Ok(self.out.inner)
    }
}

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn bmi_follows_height_and_weight() {
        // 170.0 cm, 65.0 kg: 22.49 → 22.5; 155.2 cm, 48.3 kg: 20.05 → 20.1 (rounded half up)
        assert_eq!(bmi_tenths(1700, 650), 225);
        assert_eq!(bmi_tenths(1552, 483), 201);
    }

    #[test]
    fn summary_totals_add_up_the_claims() {
        let claims = [
            Amounts {
                cost: 8000,
                payment: 500,
                other: None,
                claim: 7500,
            },
            Amounts {
                cost: 9300,
                payment: 0,
                other: Some(1000),
                claim: 8300,
            },
        ];
        let s = SummaryFields::new(format::NS_CURRENT, 1, &claims);
        assert_eq!(
            (s.subjects, s.cost, s.payment, s.other, s.claim),
            (2, 17300, 500, Some(1000), 15800)
        );
        let none = SummaryFields::new(format::NS_CURRENT, 1, &claims[..1]);
        assert_eq!(none.other, None);
        assert!(!summary_xml(&none).contains("totalPaymentByOtherProgram"));
    }
}
