//! Sorting (振分, docs/sorting.md): an archive addressed to the gateway's agency holds persons of
//! several insurers; it is split into one archive per insurer in the official layout, sent by
//! the agency (interaction type 3). DATA and CLAIMS documents are copied byte for byte — never
//! re-serialised — and the index and summary are made anew from the files each child holds.
//! See docs/sorting.md.
//!
//! The parent is read one entry at a time (names, insurers and amounts are all that is kept),
//! and each child is written as a zip stream, so no whole archive is ever held in memory.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, Write};
use std::path::Path;

use crate::numbers::{AgencyNumber, InsurerNumber};
use crate::validate::archive::{Archive, Entry, Limits};
use crate::validate::format::{self, ArchiveName, DocKind};
use crate::validate::schemas::{self, OfficialSet};
use crate::validate::xml;

#[derive(Debug, thiserror::Error)]
pub enum SortError {
    /// The parent cannot be read as the check read it: it changed, or the check missed it.
    #[error("the archive cannot be read for sorting: {0}")]
    Unreadable(String),
    #[error("writing a sorted archive")]
    Io(#[from] io::Error),
    #[error("writing a sorted archive")]
    Zip(#[from] zip::result::ZipError),
}

/// One person: a DATA file and, where the archive has claims, its CLAIMS partner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Path inside the top folder, e.g. `DATA/h13123456792026120401000001.xml`.
    pub data: String,
    pub claim: Option<String>,
    /// `recordTarget/patientRole/id[@root='…6.101']/@extension`, if the document has one.
    pub insurer: Option<String>,
}

/// What an agency-addressed archive holds, by insurer.
#[derive(Debug, Clone)]
pub struct Survey {
    /// The parent's top folder.
    pub top: String,
    /// The namespaces of the parent's index and summary: the children keep its edition.
    pub index_ns: String,
    pub summary_ns: Option<String>,
    /// 実施区分 of the parent.
    pub service_event: u8,
    /// Persons in archive order.
    pub persons: Vec<Person>,
    /// Claims without a DATA partner: they cannot be sorted and are never dropped silently.
    pub orphan_claims: Vec<String>,
}

impl Survey {
    /// Persons by insurer number (persons without one under `None`), each in archive order.
    pub fn by_insurer(&self) -> BTreeMap<Option<&str>, Vec<&Person>> {
        let mut groups: BTreeMap<Option<&str>, Vec<&Person>> = BTreeMap::new();
        for p in &self.persons {
            groups.entry(p.insurer.as_deref()).or_default().push(p);
        }
        groups
    }
}

/// The part of a record's base name that a DATA file and its claim share (all but the first
/// letter, which says the folder).
fn pair_key(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.get(1..).unwrap_or("")
}

/// The namespace of a document's root element.
fn root_ns(doc: &xml::Tree) -> Option<String> {
    doc.root().and_then(|r| r.namespace()).map(str::to_owned)
}

/// Reads an archive that passed the check: its persons and their insurers, entry by entry.
pub fn survey<R: Read + Seek>(src: R, limits: Limits) -> Result<Survey, SortError> {
    let bad = |r: crate::events::Finding| SortError::Unreadable(r.to_string());
    let mut archive = Archive::open(src, limits).map_err(|rs| {
        SortError::Unreadable(rs.first().map(ToString::to_string).unwrap_or_default())
    })?;
    let entries: Vec<Entry> = archive.entries().to_vec();
    let top = entries
        .iter()
        .find_map(|e| e.name.split_once('/').map(|(t, _)| t.to_owned()))
        .ok_or_else(|| SortError::Unreadable("no top folder".into()))?;
    let rel = |e: &Entry| e.name[top.len()..].trim_start_matches('/').to_owned();
    let in_dir = |name: &str, dir: &str| {
        name.strip_prefix(dir)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
    };
    let mut index_ns = None;
    let mut summary_ns = None;
    let mut service_event = None;
    let mut persons = Vec::new();
    let mut claims: BTreeMap<String, String> = BTreeMap::new();
    for e in entries.iter().filter(|e| !e.is_dir) {
        let name = rel(e);
        if name == format::INDEX || name == format::SUMMARY {
            let bytes = archive.read(e).map_err(bad)?;
            let doc = xml::parse(&name, &bytes).map_err(bad)?;
            if name == format::INDEX {
                index_ns = root_ns(&doc);
                service_event = doc
                    .root()
                    .and_then(|r| r.descend(&[format::index::SERVICE_EVENT_TYPE]))
                    .and_then(|n| n.attribute("code"))
                    .and_then(|c| c.parse().ok());
            } else {
                summary_ns = root_ns(&doc);
            }
        } else if in_dir(&name, format::DATA_DIR) {
            let bytes = archive.read(e).map_err(bad)?;
            let doc = xml::parse(&name, &bytes).map_err(bad)?;
            let insurer = doc
                .root()
                .and_then(|r| r.descend(format::CDA_PATIENT_IDS))
                .and_then(|p| {
                    p.children().find(|c| {
                        c.name() == "id" && c.attribute("root") == Some(format::oid::INSURER)
                    })
                })
                .and_then(|id| id.attribute("extension"))
                .map(str::to_owned);
            persons.push(Person {
                data: name,
                claim: None,
                insurer,
            });
        } else if in_dir(&name, format::CLAIMS_DIR) {
            claims.insert(pair_key(&name).to_owned(), name);
        }
    }
    for p in &mut persons {
        p.claim = claims.remove(pair_key(&p.data));
    }
    Ok(Survey {
        top,
        index_ns: index_ns.ok_or_else(|| SortError::Unreadable("no readable index".into()))?,
        summary_ns,
        service_event: service_event
            .ok_or_else(|| SortError::Unreadable("the index has no service event type".into()))?,
        persons,
        orphan_claims: claims.into_values().collect(),
    })
}

/// One child archive to make: for `insurer`, sent by `agency` on `date` as its `send_count`th
/// archive to that insurer that day.
#[derive(Debug, Clone)]
pub struct ChildSpec<'a> {
    pub agency: &'a AgencyNumber,
    pub insurer: &'a InsurerNumber,
    /// `YYYYMMDD`.
    pub date: &'a str,
    pub send_count: u8,
    pub persons: &'a [&'a Person],
}

impl ChildSpec<'_> {
    pub fn name(&self, survey: &Survey) -> ArchiveName {
        ArchiveName {
            sender: self.agency.to_string(),
            receiver: self.insurer.to_string(),
            date: self.date.to_owned(),
            send_count: self.send_count,
            service_event: survey.service_event,
        }
    }
}

/// The amounts of the claims a child holds, summed as the check sums them
/// ([`format::SUMMARY_TOTALS`]): per summary element, the sum and whether any claim had it.
fn claim_amounts(doc: &xml::Tree, sums: &mut BTreeMap<&'static str, (u64, bool)>) {
    let Some(root) = doc.root() else {
        return;
    };
    let kind = if root.name() == DocKind::Guidance.claims_root() {
        DocKind::Guidance
    } else {
        DocKind::Checkup
    };
    let settlement = root.descend(&["settlement"]);
    for (element, checkup, guidance) in format::SUMMARY_TOTALS {
        let path = match kind {
            DocKind::Checkup => *checkup,
            DocKind::Guidance => *guidance,
        };
        let amount = settlement
            .as_ref()
            .filter(|_| !path.is_empty())
            .and_then(|s| s.descend(path))
            .and_then(|n| n.attribute("value"))
            .and_then(|v| v.parse::<u64>().ok());
        let entry = sums.entry(element).or_default();
        if let Some(a) = amount {
            entry.0 = entry.0.saturating_add(a);
            entry.1 = true;
        }
    }
}

const XML_DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

fn index_xml(survey: &Survey, child: &ChildSpec<'_>, count: usize) -> String {
    use format::oid;
    format!(
        "{XML_DECL}\n<index xmlns=\"{ns}\">\n  <interactionType code=\"3\"/>\n  <creationTime value=\"{date}\"/>\n  <sender><id root=\"{agency_root}\" extension=\"{agency}\"/></sender>\n  <receiver><id root=\"{insurer_root}\" extension=\"{insurer}\"/></receiver>\n  <serviceEventType code=\"{event}\"/>\n  <totalRecordCount value=\"{count}\"/>\n</index>\n",
        ns = survey.index_ns,
        date = child.date,
        agency_root = oid::AGENCY,
        agency = child.agency,
        insurer_root = oid::INSURER,
        insurer = child.insurer,
        event = survey.service_event,
    )
}

fn summary_xml(
    ns: &str,
    event: u8,
    subjects: usize,
    sums: &BTreeMap<&'static str, (u64, bool)>,
) -> String {
    use format::summary as el;
    let mut s = format!(
        "{XML_DECL}\n<summary xmlns=\"{ns}\">\n  <{} code=\"{event}\"/>\n  <{} value=\"{subjects}\"/>\n",
        el::SERVICE_EVENT_TYPE,
        el::TOTAL_SUBJECT_COUNT
    );
    for element in [
        el::TOTAL_COST,
        el::TOTAL_PAYMENT,
        el::TOTAL_OTHER_PROGRAM,
        el::TOTAL_CLAIM,
    ] {
        let (sum, present) = sums.get(element).copied().unwrap_or((0, false));
        // The other-programme total is optional: written when a claim carries the amount.
        if element == el::TOTAL_OTHER_PROGRAM && !present {
            continue;
        }
        s.push_str(&format!(
            "  <{element} value=\"{sum}\" currency=\"JPY\"/>\n"
        ));
    }
    s.push_str("</summary>\n");
    s
}

/// The official schema set the children carry in `XSD/`: the gateway's own, pinned copy of the
/// edition of the parent's index (never the sender's copy).
fn xsd_set(index_ns: &str) -> &'static OfficialSet {
    if index_ns == schemas::SET_2007.namespace {
        &schemas::SET_2007
    } else {
        &schemas::SET_CURRENT
    }
}

/// Writes the child archive `child` of the parent read from `src` to `out` as a zip stream.
/// Entries are read from the parent one at a time.
pub fn write_child<R: Read + Seek, W: Write>(
    src: R,
    limits: Limits,
    schema_dir: &Path,
    survey: &Survey,
    child: &ChildSpec<'_>,
    out: W,
) -> Result<W, SortError> {
    use zip::write::SimpleFileOptions;
    let bad = |r: crate::events::Finding| SortError::Unreadable(r.to_string());
    let mut archive = Archive::open(src, limits).map_err(|rs| {
        SortError::Unreadable(rs.first().map(ToString::to_string).unwrap_or_default())
    })?;
    let by_name: BTreeMap<String, Entry> = archive
        .entries()
        .iter()
        .map(|e| {
            (
                e.name[survey.top.len()..]
                    .trim_start_matches('/')
                    .to_owned(),
                e.clone(),
            )
        })
        .collect();
    let top = child.name(survey).to_string();
    // A fixed time: a split that runs again after a crash writes the same bytes. The fastest
    // deflate level: each child carries the 1 MB schema set again (125 KB at level 1, 96 KB at
    // the default), and at the default the split cost more than the scan of the same archive.
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    let mut zip = zip::ZipWriter::new_stream(out);
    let claims = child.persons.iter().filter(|p| p.claim.is_some()).count();
    let count = child.persons.len() + claims;
    zip.start_file(format!("{top}/{}", format::INDEX), options)?;
    zip.write_all(index_xml(survey, child, count).as_bytes())?;
    let mut sums = BTreeMap::new();
    let mut copy = |zip: &mut zip::ZipWriter<_>, path: &str, amounts: bool| {
        let entry = by_name
            .get(path)
            .ok_or_else(|| SortError::Unreadable(format!("{path} is gone")))?;
        let bytes = archive.read(entry).map_err(bad)?;
        if amounts {
            let doc = xml::parse(path, &bytes).map_err(bad)?;
            claim_amounts(&doc, &mut sums);
        }
        zip.start_file(format!("{top}/{path}"), options)?;
        zip.write_all(&bytes)?;
        Ok::<(), SortError>(())
    };
    for p in child.persons {
        copy(&mut zip, &p.data, false)?;
    }
    for p in child.persons {
        if let Some(c) = &p.claim {
            copy(&mut zip, c, true)?;
        }
    }
    if claims > 0 {
        let ns = survey.summary_ns.as_deref().unwrap_or(&survey.index_ns);
        zip.start_file(format!("{top}/{}", format::SUMMARY), options)?;
        zip.write_all(summary_xml(ns, survey.service_event, claims, &sums).as_bytes())?;
    }
    let set = xsd_set(&survey.index_ns);
    for pin in set.files {
        let mut f = std::fs::File::open(schema_dir.join(set.folder).join(pin.path))?;
        zip.start_file(format!("{top}/{}{}", format::XSD_DIR, pin.path), options)?;
        io::copy(&mut f, &mut zip)?;
    }
    Ok(zip.finish()?.into_inner())
}
