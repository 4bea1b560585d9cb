//! One archive put together from its documents, with the change each violation makes in its
//! place (a document, the index, the summary, a zip entry or the container) and where the
//! finding must then point.

use std::io;
use std::path::Path;

use super::catalogue::{OTHER_INSTITUTION, OTHER_INSURER, names};
use super::documents::{
    CdaTweak, ClaimTweak, IndexFields, SummaryFields, cda_xml, claim_xml, index_xml, summary_xml,
};
use super::persons::{Person, person};
use super::zip::{Body, Entry, Packing, Plan, ZERO_CHUNK};
use super::{Edition, Expected, Rng, Spec, Violation, default_interaction_type};
use crate::validate::archive::{Limits, RATIO_FLOOR};
use crate::validate::format::{self, DocKind, Folder, Party, date_digits, oid};

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

pub(super) fn build(
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
