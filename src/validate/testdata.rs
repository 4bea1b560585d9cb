//! Synthetic checkup archives for the tests, the benchmarks and the README example: valid
//! archives of any number of persons with invented but plausible content (never real personal
//! data), and one archive per rule the validator enforces, each saying where its finding must
//! point.
//!
//! The zip container is written by hand rather than with a zip library, because the hostile
//! archives (duplicate names, headers that disagree, lying sizes, a 10 GiB bomb) are exactly
//! what a well-behaved library refuses to write.

use std::io::{self, Write};

use flate2::{Compress, Compression, FlushCompress};
use time::Date;

use super::archive::{Limits, RATIO_FLOOR};
use super::format_legacy::{self as format, RecordKind};
use crate::config::CounterpartKind;

/// What a generated archive holds.
#[derive(Debug, Clone)]
pub struct Spec {
    pub sender: String,
    pub sender_kind: CounterpartKind,
    pub receiver: String,
    pub persons: usize,
    pub kind: RecordKind,
    pub created: Date,
    pub seed: u64,
    /// One settlement file per person under `CLAIMS/`.
    pub claims: bool,
    /// Extra valid observation lines in the first record, to make a file of many lines.
    pub padding_lines: usize,
    /// More files to put in the archive as they are (e.g. under `XSD/`, which the check
    /// ignores but the virus scanner reads).
    pub extra_files: Vec<(String, Vec<u8>)>,
}

impl Spec {
    /// A checkup archive from clinic 1312345679 to insurer 06130017 (the example config).
    pub fn example(persons: usize, created: Date) -> Spec {
        Spec {
            sender: "1312345679".into(),
            sender_kind: CounterpartKind::Clinic,
            receiver: "06130017".into(),
            persons,
            kind: RecordKind::Checkup,
            created,
            seed: 1,
            claims: false,
            padding_lines: 0,
            extra_files: Vec::new(),
        }
    }
}

/// Where the finding for a violation must point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub rule: &'static str,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// One broken rule per archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    Unreadable,
    Traversal,
    BadName,
    Duplicate,
    TooManyEntries,
    EntryTooLarge,
    TotalTooLarge,
    Ratio,
    Nested,
    Encrypted,
    Method,
    HeaderMismatch,
    Corrupt,
    LyingSize,
    Missing,
    Unexpected,
    Empty,
    Encoding,
    Dtd,
    BillionLaughs,
    Malformed,
    XsdInvalid,
    InteractionType,
    SenderNumber,
    ReceiverNumber,
    NumberMalformed,
    CheckDigit,
    SenderMismatch,
    ReceiverUnknown,
    IndexCount,
    SummaryCount,
    SummaryMismatch,
    NamePattern,
    NameSender,
    DataKind,
    DataSender,
    DateInvalid,
    DateFuture,
}

impl Violation {
    pub const ALL: [Violation; 38] = [
        Violation::Unreadable,
        Violation::Traversal,
        Violation::BadName,
        Violation::Duplicate,
        Violation::TooManyEntries,
        Violation::EntryTooLarge,
        Violation::TotalTooLarge,
        Violation::Ratio,
        Violation::Nested,
        Violation::Encrypted,
        Violation::Method,
        Violation::HeaderMismatch,
        Violation::Corrupt,
        Violation::LyingSize,
        Violation::Missing,
        Violation::Unexpected,
        Violation::Empty,
        Violation::Encoding,
        Violation::Dtd,
        Violation::BillionLaughs,
        Violation::Malformed,
        Violation::XsdInvalid,
        Violation::InteractionType,
        Violation::SenderNumber,
        Violation::ReceiverNumber,
        Violation::NumberMalformed,
        Violation::CheckDigit,
        Violation::SenderMismatch,
        Violation::ReceiverUnknown,
        Violation::IndexCount,
        Violation::SummaryCount,
        Violation::SummaryMismatch,
        Violation::NamePattern,
        Violation::NameSender,
        Violation::DataKind,
        Violation::DataSender,
        Violation::DateInvalid,
        Violation::DateFuture,
    ];

    /// The rule id the validator must report.
    pub fn rule(self) -> &'static str {
        use Violation::*;
        match self {
            Unreadable => "zip.unreadable",
            Traversal => "zip.traversal",
            BadName => "zip.bad-name",
            Duplicate => "zip.duplicate",
            TooManyEntries => "zip.too-many-entries",
            EntryTooLarge => "zip.entry-too-large",
            TotalTooLarge => "zip.total-too-large",
            Ratio => "zip.ratio",
            Nested => "zip.nested",
            Encrypted => "zip.encrypted",
            Method => "zip.method",
            HeaderMismatch => "zip.header-mismatch",
            Corrupt | LyingSize => "zip.corrupt",
            Missing => "layout.missing",
            Unexpected => "layout.unexpected",
            Empty => "layout.empty",
            Encoding => "xml.encoding",
            Dtd | BillionLaughs => "xml.dtd",
            Malformed => "xml.malformed",
            XsdInvalid => "xsd.invalid",
            InteractionType => "index.interaction-type",
            SenderNumber => "index.sender-number",
            ReceiverNumber => "index.receiver-number",
            NumberMalformed => "number.malformed",
            CheckDigit => "number.check-digit",
            SenderMismatch => "index.sender-mismatch",
            ReceiverUnknown => "index.receiver-unknown",
            IndexCount => "index.count-mismatch",
            SummaryCount => "summary.count-mismatch",
            SummaryMismatch => "summary.mismatch",
            NamePattern => "name.pattern",
            NameSender => "name.sender",
            DataKind => "data.kind",
            DataSender => "data.sender-mismatch",
            DateInvalid => "date.invalid",
            DateFuture => "date.future",
        }
    }

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
}

/// Writes a valid archive for `spec` to `out`.
pub fn write_valid<W: Write>(spec: &Spec, out: W) -> io::Result<W> {
    build(spec, None, &default_limits()).0.finish(out)
}

/// Writes an archive for `spec` that breaks exactly the rule of `violation`, sized against
/// `limits`; returns where the finding must point.
pub fn write_violation<W: Write>(
    spec: &Spec,
    violation: Violation,
    limits: &Limits,
    out: W,
) -> io::Result<(W, Expected)> {
    let (plan, expected) = build(spec, Some(violation), limits);
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

/// Names the generated records.
fn record_name(spec: &Spec, kind: RecordKind, number: &str, serial: usize) -> String {
    let dir = if kind == RecordKind::Claims {
        format::CLAIMS_DIR
    } else {
        format::DATA_DIR
    };
    format!(
        "{dir}{}{number}{}{serial:0width$}.xml",
        kind.prefix(),
        date_digits(spec.created),
        width = format::NAME_SERIAL_DIGITS
    )
}

fn date_digits(d: Date) -> String {
    format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day())
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

/// The content of `index.xml`, field by field, so that a violation can change one.
struct IndexFields {
    interaction: String,
    created: String,
    sender_root: String,
    sender: String,
    receiver_root: String,
    receiver: String,
    service: String,
    count: usize,
}

fn index_xml(f: &IndexFields) -> String {
    let ns = format::EXCHANGE_NS;
    [
        r#"<?xml version="1.0" encoding="UTF-8"?>"#.to_owned(),
        format!(r#"<index xmlns="{ns}">"#),
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

fn summary_xml(service: &str, count: usize, amount: u64) -> String {
    let ns = format::EXCHANGE_NS;
    [
        r#"<?xml version="1.0" encoding="UTF-8"?>"#.to_owned(),
        format!(r#"<summary xmlns="{ns}">"#),
        format!(r#"  <serviceEventType code="{service}"/>"#),
        format!(r#"  <totalRecordCount value="{count}"/>"#),
        format!(r#"  <totalCostAmount value="{amount}"/>"#),
        format!(r#"  <totalPaymentAmount value="{}"/>"#, amount / 10 * 3),
        format!(
            r#"  <totalClaimAmount value="{}"/>"#,
            amount - amount / 10 * 3
        ),
        "</summary>".into(),
        String::new(),
    ]
    .join("\n")
}

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
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const FAMILY: &[&str] = &[
    "ヤマダ",
    "タナカ",
    "スズキ",
    "サトウ",
    "タカハシ",
    "イトウ",
    "ワタナベ",
    "ナカムラ",
];
const GIVEN: &[&str] = &[
    "タロウ",
    "ハナコ",
    "ケンジ",
    "ユミ",
    "ヒロシ",
    "アキコ",
    "マコト",
    "ナオミ",
];

/// Observation codes, names, units and plausible ranges (synthetic code values).
const OBSERVATIONS: &[(&str, &str, &str, u64, u64)] = &[
    ("9N001000000000001", "身長", "cm", 1450, 1900),
    ("9N006000000000001", "体重", "kg", 400, 1000),
    ("9N011000000000001", "BMI", "kg/m2", 170, 320),
    ("9N016160100000001", "腹囲", "cm", 600, 1100),
    ("9A751000000000001", "収縮期血圧", "mmHg", 1000, 1700),
    ("9A752000000000001", "拡張期血圧", "mmHg", 600, 1000),
    ("3F015000002327101", "中性脂肪", "mg/dL", 500, 3000),
    ("3F070000002327101", "HDLコレステロール", "mg/dL", 300, 900),
    ("3D045000001906202", "HbA1c", "%", 45, 80),
    ("3B035000002327201", "AST", "U/L", 100, 500),
];

/// Changes a violation makes to one record document.
#[derive(Default)]
struct RecordTweak {
    encoding: Option<&'static str>,
    doctype: Option<&'static str>,
    malformed: bool,
    unknown_element: bool,
    birth: Option<String>,
    effective: Option<String>,
    author: Option<String>,
    padding_lines: usize,
}

fn record_xml(
    spec: &Spec,
    kind: RecordKind,
    serial: usize,
    rng: &mut Rng,
    t: &RecordTweak,
) -> String {
    let created = date_digits(spec.created);
    let birth = t.birth.clone().unwrap_or_else(|| {
        format!(
            "{}{:02}{:02}",
            1950 + rng.below(40),
            1 + rng.below(12),
            1 + rng.below(28)
        )
    });
    let effective = t.effective.clone().unwrap_or_else(|| created.clone());
    let author = t.author.clone().unwrap_or_else(|| spec.sender.clone());
    let mut lines = vec![format!(
        r#"<?xml version="1.0" encoding="{}"?>"#,
        t.encoding.unwrap_or("UTF-8")
    )];
    if let Some(doctype) = t.doctype {
        lines.extend(doctype.lines().map(str::to_owned));
    }
    let (code, title) = match kind {
        RecordKind::Guidance => ("20", "特定保健指導情報"),
        _ => ("10", "特定健診情報"),
    };
    lines.extend([
        format!(r#"<ClinicalDocument xmlns="{}">"#, format::CDA_NS),
        r#"  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>"#.into(),
        format!(
            r#"  <id root="{}.{}" extension="{serial:07}"/>"#,
            format::party_oid(spec.sender_kind),
            spec.sender
        ),
        format!(r#"  <code code="{code}" codeSystem="1.2.392.200119.6.1001"/>"#),
        format!("  <title>{title}</title>"),
        format!(r#"  <effectiveTime value="{effective}"/>"#),
        r#"  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>"#.into(),
        "  <recordTarget>".into(),
        "    <patientRole>".into(),
        format!(
            r#"      <id root="1.2.392.200119.6.204" extension="{:08}"/>"#,
            rng.below(100_000_000)
        ),
        "      <patient>".into(),
        format!(
            "        <name>{} {}</name>",
            rng.pick(FAMILY),
            rng.pick(GIVEN)
        ),
        format!(
            r#"        <administrativeGenderCode code="{}" codeSystem="1.2.392.200119.6.1104"/>"#,
            1 + rng.below(2)
        ),
        format!(r#"        <birthTime value="{birth}"/>"#),
        "      </patient>".into(),
        "    </patientRole>".into(),
        "  </recordTarget>".into(),
        "  <author>".into(),
        format!(r#"    <time value="{created}"/>"#),
        format!(
            r#"    <assignedAuthor><id root="{}" extension="{author}"/></assignedAuthor>"#,
            format::party_oid(spec.sender_kind)
        ),
        "  </author>".into(),
        "  <documentationOf>".into(),
        format!(r#"    <serviceEvent><effectiveTime value="{created}"/></serviceEvent>"#),
        "  </documentationOf>".into(),
        "  <component>".into(),
        "    <structuredBody>".into(),
        "      <component>".into(),
        "        <section>".into(),
        r#"          <code code="01010" codeSystem="1.2.392.200119.6.1010"/>"#.into(),
    ]);
    let observation = |rng: &mut Rng, (code, name, unit, lo, hi): (&str, &str, &str, u64, u64)| {
        let v = lo + rng.below(hi - lo);
        format!(
            r#"          <entry><observation><code code="{code}" codeSystem="1.2.392.200119.6.1005" displayName="{name}"/><value value="{}.{}" unit="{unit}"/></observation></entry>"#,
            v / 10,
            v % 10
        )
    };
    for i in 0..t.padding_lines {
        lines.push(observation(rng, OBSERVATIONS[i % OBSERVATIONS.len()]));
    }
    if t.unknown_element {
        lines.push(r#"          <remark>not part of the schema</remark>"#.into());
    }
    for &o in OBSERVATIONS {
        lines.push(observation(rng, o));
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

fn claims_xml(spec: &Spec, serial: usize, rng: &mut Rng) -> String {
    [
        r#"<?xml version="1.0" encoding="UTF-8"?>"#.to_owned(),
        format!(r#"<settlement xmlns="{}">"#, format::EXCHANGE_NS),
        format!(
            r#"  <id root="{}" extension="{}"/>"#,
            format::party_oid(spec.sender_kind),
            spec.sender
        ),
        format!(r#"  <record value="{serial:07}"/>"#),
        format!(r#"  <amount value="{}"/>"#, 5000 + rng.below(20000)),
        "</settlement>".into(),
        String::new(),
    ]
    .join("\n")
}

/// The valid number of another institution and an unconfigured insurer, for violations.
const OTHER_INSTITUTION: &str = "2717654327";
const UNKNOWN_INSURER: &str = "39999990";

fn build(spec: &Spec, violation: Option<Violation>, limits: &Limits) -> (Plan, Option<Expected>) {
    use Violation::*;
    let mut rng = Rng(spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut plan = Plan::default();
    let mut expected = None;
    let persons = if violation == Some(Empty) {
        0
    } else {
        spec.persons.max(1)
    };
    let receiver_kind = spec.sender_kind.peer();
    let interaction = format::INTERACTION_TYPES
        .iter()
        .find(|(_, from, _)| *from == spec.sender_kind)
        .map_or("1", |(code, _, _)| code);
    let service = spec.kind.service_event_code().unwrap_or("1").to_owned();
    let mut index = IndexFields {
        interaction: interaction.into(),
        created: date_digits(spec.created),
        sender_root: format::party_oid(spec.sender_kind).into(),
        sender: spec.sender.clone(),
        receiver_root: format::party_oid(receiver_kind).into(),
        receiver: spec.receiver.clone(),
        service: service.clone(),
        count: persons,
    };
    let mut summary_service = service.clone();
    let mut summary_count = persons;
    match violation {
        Some(InteractionType) => index.interaction = "5".into(),
        Some(SenderNumber) => index.sender_root = format::party_oid(receiver_kind).into(),
        Some(ReceiverNumber) => index.receiver_root = format::party_oid(spec.sender_kind).into(),
        Some(NumberMalformed) => index.receiver = spec.receiver[1..].into(),
        Some(CheckDigit) => {
            let mut digits = spec.receiver.clone().into_bytes();
            if let Some(last) = digits.last_mut() {
                *last = b'0' + (*last - b'0' + 1) % 10;
            }
            index.receiver = String::from_utf8(digits).unwrap_or_default();
        }
        Some(SenderMismatch) => index.sender = OTHER_INSTITUTION.into(),
        Some(ReceiverUnknown) => index.receiver = UNKNOWN_INSURER.into(),
        Some(IndexCount) => index.count = persons + 1,
        Some(SummaryCount) => summary_count = persons + 1,
        Some(SummaryMismatch) => summary_service = "2".into(),
        Some(LyingSize) => {
            index.count = persons + 1;
            summary_count = persons + 1;
        }
        _ => {}
    }
    let index_text = index_xml(&index);
    let index_marker = match violation {
        Some(InteractionType) => Some("interactionType"),
        Some(SenderNumber | SenderMismatch) => Some("<sender>"),
        Some(ReceiverNumber | NumberMalformed | CheckDigit | ReceiverUnknown) => Some("<receiver>"),
        Some(IndexCount) => Some("totalRecordCount"),
        _ => None,
    };
    if let Some(marker) = index_marker {
        expected = expect(
            violation.map_or("", Violation::rule),
            format::INDEX,
            line_of(&index_text, marker),
        );
    }
    plan.bytes(format::INDEX, index_text.into_bytes());
    let summary_text = summary_xml(&summary_service, summary_count, persons as u64 * 7400);
    match violation {
        Some(SummaryCount) => {
            expected = expect(
                SummaryCount.rule(),
                format::SUMMARY,
                line_of(&summary_text, "totalRecordCount"),
            )
        }
        Some(SummaryMismatch) => {
            expected = expect(
                SummaryMismatch.rule(),
                format::SUMMARY,
                line_of(&summary_text, "serviceEventType"),
            )
        }
        _ => {}
    }
    if violation != Some(Missing) {
        plan.bytes(format::SUMMARY, summary_text.into_bytes());
    } else {
        expected = expect(Missing.rule(), format::SUMMARY, None);
    }
    plan.dir(format::DATA_DIR);

    // The record a violation concerns is the last one, so that it is not found by accident
    // in the first file read.
    let target = persons.saturating_sub(1);
    for i in 0..persons {
        let serial = i + 1;
        let mut kind = spec.kind;
        let mut number = spec.sender.clone();
        let mut tweak = RecordTweak {
            padding_lines: if i == 0 { spec.padding_lines } else { 0 },
            ..RecordTweak::default()
        };
        let mut marker = None;
        let concerned = i == target;
        if concerned {
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
                Some(DataKind) => kind = other_kind(spec.kind),
                Some(NameSender) => number = OTHER_INSTITUTION.into(),
                Some(DataSender) => {
                    tweak.author = Some(OTHER_INSTITUTION.into());
                    marker = Some("assignedAuthor");
                }
                Some(DateInvalid) => {
                    tweak.birth = Some("19650231".into());
                    marker = Some("birthTime");
                }
                Some(DateFuture) => {
                    let future = spec.created.replace_year(spec.created.year() + 2);
                    tweak.effective = Some(date_digits(future.unwrap_or(spec.created)));
                    marker = Some("  <effectiveTime");
                }
                _ => {}
            }
        }
        let mut name = record_name(spec, kind, &number, serial);
        if concerned && violation == Some(NamePattern) {
            name = format!("{}record-{serial}.xml", format::DATA_DIR);
        }
        let text = record_xml(spec, kind, serial, &mut rng, &tweak);
        if concerned {
            match violation {
                Some(v) if marker.is_some() => {
                    expected = expect(v.rule(), &name, marker.and_then(|m| line_of(&text, m)))
                }
                Some(v @ (DataKind | NameSender | NamePattern)) => {
                    expected = expect(v.rule(), &name, None)
                }
                _ => {}
            }
        }
        let mut entry = Entry::new(&name, Body::Bytes(text.into_bytes()));
        if concerned {
            match violation {
                Some(Encrypted) => {
                    entry.encrypted = true;
                    expected = expect(Encrypted.rule(), &name, None);
                }
                Some(Method) => {
                    entry.method = Packing::Raw(12);
                    expected = expect(Method.rule(), &name, None);
                }
                Some(HeaderMismatch) => {
                    // The finding concerns the directory as a whole: no file.
                    entry.local_name = Some(format!("{}x.xml", format::DATA_DIR));
                }
                Some(Corrupt) => {
                    entry.bad_crc = true;
                    expected = expect(Corrupt.rule(), &name, None);
                }
                _ => {}
            }
        }
        plan.entries.push(entry);
    }
    if spec.claims {
        plan.dir(format::CLAIMS_DIR);
        for i in 0..persons {
            let name = record_name(spec, RecordKind::Claims, &spec.sender, i + 1);
            let text = claims_xml(spec, i + 1, &mut rng);
            plan.bytes(&name, text.into_bytes());
        }
    }
    for (name, bytes) in &spec.extra_files {
        plan.bytes(name, bytes.clone());
    }
    let zeros = |size: u64| Body::Zeros(size.div_ceil(ZERO_CHUNK) * ZERO_CHUNK);
    match violation {
        Some(Unreadable) => plan.truncate = true,
        Some(Traversal) => {
            plan.bytes("../outside.xml", b"<a/>".to_vec());
            expected = expect(Traversal.rule(), "../outside.xml", None);
        }
        Some(BadName) => {
            plan.bytes("XSD/a\u{7}b.xsd", b"<a/>".to_vec());
            expected = expect(BadName.rule(), "XSD/a\u{7}b.xsd", None);
        }
        Some(Duplicate) => {
            plan.bytes("INDEX.XML", b"<a/>".to_vec());
            expected = expect(Duplicate.rule(), "INDEX.XML", None);
        }
        Some(TooManyEntries) => {
            for i in 0..=limits.max_entries {
                plan.bytes(&format!("XSD/{i}.xsd"), Vec::new());
            }
        }
        Some(EntryTooLarge) => {
            // The classic bomb: 10 GiB of zeros, about 10 MiB compressed, sizes declared
            // honestly (zip64).
            let size = (10u64 << 30).max(limits.max_entry_size + 1);
            plan.entries.push(Entry::new("XSD/zeros.xsd", zeros(size)));
            expected = expect(EntryTooLarge.rule(), "XSD/zeros.xsd", None);
        }
        Some(Ratio) => {
            let size = match limits.max_entry_size.min(50 << 20) {
                small if small <= RATIO_FLOOR => RATIO_FLOOR + ZERO_CHUNK,
                size => size,
            };
            let size = size / ZERO_CHUNK * ZERO_CHUNK;
            plan.entries
                .push(Entry::new("XSD/zeros.xsd", Body::Zeros(size)));
            expected = expect(Ratio.rule(), "XSD/zeros.xsd", None);
        }
        Some(LyingSize) => {
            // The same zeros, but the headers claim a tiny entry: only reading finds out. The
            // counts in index and summary include it, so only the size lies.
            let mut entry = Entry::new(
                &record_name(spec, spec.kind, &spec.sender, persons + 1),
                zeros(10 << 30),
            );
            entry.declared_size = Some(4096);
            expected = expect(LyingSize.rule(), &entry.name, None);
            plan.entries.push(entry);
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
                plan.entries
                    .push(Entry::new(&format!("XSD/part{i}.xsd"), body));
            }
        }
        Some(Nested) => {
            plan.bytes("XSD/schemas.zip", b"PK\x03\x04".to_vec());
            expected = expect(Nested.rule(), "XSD/schemas.zip", None);
        }
        Some(Unexpected) => {
            plan.bytes("notes.txt", b"see attached".to_vec());
            expected = expect(Unexpected.rule(), "notes.txt", None);
        }
        _ => {}
    }
    (plan, expected)
}

fn other_kind(kind: RecordKind) -> RecordKind {
    match kind {
        RecordKind::Checkup => RecordKind::Guidance,
        _ => RecordKind::Checkup,
    }
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

    #[test]
    fn the_numbers_violations_use_are_well_formed() {
        assert!(numbers::check(NumberKind::Institution, OTHER_INSTITUTION).is_ok());
        assert!(numbers::check(NumberKind::Insurer, UNKNOWN_INSURER).is_ok());
    }

    #[test]
    fn violations_have_distinct_slugs() {
        for v in Violation::ALL {
            assert_eq!(Violation::from_slug(&v.slug()), Some(v));
        }
    }
}
