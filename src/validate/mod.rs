//! The schema check of specific-health-checkup exchange archives (DESIGN §5).
//!
//! An archive is checked in layers, each refusing before the next costs anything: the zip
//! directory ([`archive`]), the layout, then each XML file's encoding, well-formedness and
//! schema ([`xml`]), then the rules across files ([`rules`]). Every finding names its rule,
//! the file inside the archive and, where there is one, the line. The facts of the format
//! that are assumptions live in one table, [`format`].

pub mod archive;
pub mod format;
pub mod format_legacy;
pub mod rules;
pub mod schemas;
pub mod testdata;
pub mod xml;

use std::io::{Read, Seek};
use std::path::Path;

use time::Date;

use crate::config::{Config, Counterpart};
use crate::receipts::Reason;
use archive::{Archive, Entry, Limits};
use format_legacy::RecordKind;
pub use rules::{Expect, Header};
pub use xml::SchemaError;

/// More findings than this are cut short: a sender fixes the first ones and sends again.
pub const MAX_FINDINGS: usize = 200;

/// The result of checking an archive that could be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Every rule holds; the header's facts route the file.
    Valid(Header),
    /// The findings, in archive order.
    Invalid(Vec<Reason>),
}

/// Checks the archive read from `src` for the uploader and configuration in `expect`, with
/// the schemas in `schema_dir`. `Err` only when the schema set itself cannot be used.
pub fn check_archive<R: Read + Seek>(
    src: R,
    limits: Limits,
    schema_dir: &Path,
    expect: &Expect<'_>,
) -> Result<Checked, SchemaError> {
    let mut archive = match Archive::open(src, limits) {
        Ok(a) => a,
        Err(findings) => return Ok(Checked::Invalid(findings)),
    };
    let layout = match Layout::of(archive.entries()) {
        Ok(l) => l,
        Err(findings) => return Ok(Checked::Invalid(findings)),
    };
    xml::with_schemas(schema_dir, |schemas| {
        let mut run = Run {
            archive: &mut archive,
            schemas,
            findings: Vec::new(),
        };
        let header = run.check(&layout, expect);
        let mut findings = run.findings;
        if findings.len() > MAX_FINDINGS {
            let more = findings.len() - MAX_FINDINGS;
            findings.truncate(MAX_FINDINGS);
            findings.push(Reason::new(
                "findings.truncated",
                format!("{more} more findings were not listed; correct these and send again"),
            ));
        }
        if findings.is_empty() {
            Checked::Valid(header)
        } else {
            Checked::Invalid(findings)
        }
    })
}

/// Checks a file that `sender` uploaded, with the schema set, archive limits and time zone of
/// `config`: the check the pipeline runs.
pub fn check_upload<R: Read + Seek>(
    src: R,
    sender: &Counterpart,
    config: &Config,
) -> Result<Checked, SchemaError> {
    let expect = Expect {
        sender,
        config,
        today: today(config.gateway.utc_offset()),
    };
    check_archive(
        src,
        Limits::from(&config.gateway.archive),
        &config.gateway.schema_dir,
        &expect,
    )
}

/// The entries of an archive by role.
struct Layout {
    index: Entry,
    summary: Entry,
    records: Vec<Entry>,
    claims: Vec<Entry>,
}

impl Layout {
    fn of(entries: &[Entry]) -> Result<Layout, Vec<Reason>> {
        let mut findings = Vec::new();
        let (mut index, mut summary) = (None, None);
        let (mut records, mut claims) = (Vec::new(), Vec::new());
        for e in entries {
            let name = e.name.as_str();
            let in_dir = |dir: &str| {
                name.strip_prefix(dir)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
            };
            match name {
                format_legacy::INDEX => index = Some(e.clone()),
                format_legacy::SUMMARY => summary = Some(e.clone()),
                format_legacy::DATA_DIR | format_legacy::CLAIMS_DIR | format_legacy::XSD_DIR
                    if e.is_dir => {}
                _ if e.is_dir => findings.push(unexpected(name)),
                _ if in_dir(format_legacy::DATA_DIR) => records.push(e.clone()),
                _ if in_dir(format_legacy::CLAIMS_DIR) => claims.push(e.clone()),
                _ if name.starts_with(format_legacy::XSD_DIR) => {}
                _ => findings.push(unexpected(name)),
            }
        }
        for (found, name) in [
            (&index, format_legacy::INDEX),
            (&summary, format_legacy::SUMMARY),
        ] {
            if found.is_none() {
                findings.push(
                    Reason::new(
                        "layout.missing",
                        format!("the archive has no {name} at its root"),
                    )
                    .in_file(name),
                );
            }
        }
        if records.is_empty() {
            findings.push(Reason::new(
                "layout.empty",
                format!(
                    "the archive holds no record files under {}",
                    format_legacy::DATA_DIR
                ),
            ));
        }
        match (index, summary) {
            (Some(index), Some(summary)) if findings.is_empty() => Ok(Layout {
                index,
                summary,
                records,
                claims,
            }),
            _ => Err(findings),
        }
    }
}

fn unexpected(name: &str) -> Reason {
    Reason::new(
        "layout.unexpected",
        format!(
            "only {}, {}, and files directly under {}, {} or {} belong in the archive",
            format_legacy::INDEX,
            format_legacy::SUMMARY,
            format_legacy::DATA_DIR,
            format_legacy::CLAIMS_DIR,
            format_legacy::XSD_DIR
        ),
    )
    .in_file(name)
}

/// One archive being checked.
struct Run<'a, R: Read + Seek> {
    archive: &'a mut Archive<R>,
    schemas: &'a mut xml::SchemaSet,
    findings: Vec<Reason>,
}

impl<R: Read + Seek> Run<'_, R> {
    fn check(&mut self, layout: &Layout, expect: &Expect<'_>) -> Header {
        let today = expect.today;
        let mut header = Header::default();
        let index = self.document(&layout.index, format_legacy::Role::Index);
        if let Some(doc) = &index {
            header = rules::check_index(doc, expect, &mut self.findings);
        }
        let summary = self.document(&layout.summary, format_legacy::Role::Summary);
        let records = layout.records.len() as u64;
        if let Some(doc) = &index {
            rules::check_index_count(doc, &header, records, &mut self.findings);
        }
        if let Some(doc) = &summary {
            rules::check_summary(doc, &header, records, &mut self.findings);
        }
        drop((index, summary));
        let record_kinds = [RecordKind::Checkup, RecordKind::Guidance];
        for (entries, kinds) in [
            (&layout.records, &record_kinds[..]),
            (&layout.claims, &[RecordKind::Claims][..]),
        ] {
            for entry in entries {
                if self.findings.len() > MAX_FINDINGS {
                    return header;
                }
                let Some(kind) = rules::check_record_name(
                    &entry.name,
                    kinds,
                    &header,
                    today,
                    &mut self.findings,
                ) else {
                    continue;
                };
                if let Some(doc) = self.document(entry, kind.role())
                    && kind != RecordKind::Claims
                {
                    rules::check_record(&entry.name, &doc, &header, today, &mut self.findings);
                }
            }
        }
        header
    }

    /// Reads, parses and schema-checks one entry; `None` (with findings) when it fails.
    fn document(
        &mut self,
        entry: &Entry,
        role: format_legacy::Role,
    ) -> Option<libxml::tree::Document> {
        let bytes = match self.archive.read(entry) {
            Ok(b) => b,
            Err(r) => {
                self.findings.push(r);
                return None;
            }
        };
        let parsed = xml::check_text(&entry.name, &bytes).and_then(|t| xml::parse(&entry.name, t));
        let doc = match parsed {
            Ok(d) => d,
            Err(r) => {
                self.findings.push(r);
                return None;
            }
        };
        let invalid = self.schemas.validate(role, &entry.name, &doc);
        if invalid.is_empty() {
            Some(doc)
        } else {
            self.findings.extend(invalid);
            None
        }
    }
}

/// Today's date at the gateway's offset, against which "not in the future" is read.
pub fn today(offset: time::UtcOffset) -> Date {
    time::OffsetDateTime::now_utc().to_offset(offset).date()
}
