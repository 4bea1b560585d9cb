//! The check of specific-health-checkup exchange archives in the official MHLW V08 format
//! (docs/validation.md).
//!
//! An archive is checked in layers, each refusing before the next costs anything: the zip
//! directory ([`archive`]), the layout and names, then each XML file's encoding,
//! well-formedness and schema for its edition ([`xml`], [`schemas`]), then the rules across
//! files ([`rules`]). Every finding names its rule, the file inside the archive and, where
//! there is one, the line, in Japanese and English ([`finding`]); the configuration decides
//! which findings reject the file and which travel with it as warnings.

pub mod archive;
pub mod finding;
pub mod format;
pub mod rules;
pub mod schemas;
pub mod testdata;
pub mod xml;

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::path::Path;

use time::Date;

use crate::config::{Config, Counterpart};
use crate::events::Finding;
use archive::{Archive, Entry, Limits};
use finding::{Lang, Observation, Policy, Rule, Severity, Text};
use format::{ArchiveName, DocKind, Folder};
pub use rules::{Expect, Header};
use schemas::{Catalog, Edition, Role};
pub use xml::SchemaError;

/// More findings than this are cut short: a sender fixes the first ones and sends again.
pub const MAX_FINDINGS: usize = 200;

/// The result of checking an archive that could be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// No finding rejects the file; the header's facts route it, and the warnings travel with
    /// it into both parties' receipts.
    Valid {
        header: Header,
        warnings: Vec<Finding>,
    },
    /// The findings that reject it, and the warnings, in archive order.
    Invalid(Vec<Finding>),
}

/// Checks the archive read from `src` for the uploader, file name and configuration in
/// `expect`, with findings in `lang`. `Err` only when the schema set itself cannot be used.
pub fn check_archive<R: Read + Seek>(
    src: R,
    limits: Limits,
    schema_dir: &Path,
    expect: &Expect<'_>,
    lang: Lang,
) -> Result<Checked, SchemaError> {
    let policy = Policy {
        gateway: &expect.config.gateway.validation.rules,
        counterpart: &expect.sender.rules,
    };
    let mut findings = Vec::new();
    let header = match Archive::open(src, limits) {
        Err(zip) => {
            // Entries are named inside the top folder, as every other finding names them.
            let stem = expect.file_name.trim_end_matches(".p7m");
            let top = format!("{}/", stem.strip_suffix(".zip").unwrap_or(stem));
            findings.extend(zip.into_iter().map(|mut r| {
                if let Some(inside) = r.file.as_deref().and_then(|f| f.strip_prefix(&top)) {
                    r.file = Some(inside.to_owned());
                }
                Observation::from_finding(r)
            }));
            None
        }
        Ok(mut archive) => match Layout::of(archive.entries(), &mut findings) {
            None => None,
            Some(layout) => schemas::with_catalog(schema_dir, |catalog| {
                let mut run = Run {
                    archive: &mut archive,
                    catalog,
                    expect,
                    policy,
                    findings: &mut findings,
                    editions: BTreeMap::new(),
                };
                run.check(&layout)
            })
            .map(Some)?,
        },
    };
    Ok(judge(header, findings, policy, lang))
}

/// Applies the severities: off findings go, and the file is valid unless one rejects.
fn judge(
    header: Option<Header>,
    findings: Vec<Observation>,
    policy: Policy<'_>,
    lang: Lang,
) -> Checked {
    let mut reasons = Vec::new();
    let mut rejected = header.is_none();
    for f in &findings {
        let severity = policy.severity(f.rule);
        if severity == Severity::Off {
            continue;
        }
        rejected |= severity == Severity::Reject;
        reasons.push(f.finding(lang, severity));
    }
    if reasons.len() > MAX_FINDINGS {
        let more = reasons.len() - MAX_FINDINGS;
        reasons.truncate(MAX_FINDINGS);
        reasons.push(
            Observation::new(
                Rule::FindingsTruncated,
                Text::new(
                    format!("ほかに {more} 件の指摘があります。これらを修正して再送してください"),
                    format!("{more} more findings were not listed; correct these and send again"),
                ),
            )
            .finding(lang, Severity::Reject),
        );
    }
    // What must be corrected comes first; the warnings after it, each group in archive order.
    reasons.sort_by_key(|r| r.warning);
    match header {
        Some(header) if !rejected => Checked::Valid {
            header,
            warnings: reasons,
        },
        _ => Checked::Invalid(reasons),
    }
}

/// Checks a file that `sender` uploaded as `file_name`, with the schema set, archive limits,
/// time zone and rule settings of `config`, findings in the sender's language: the check the
/// pipeline runs.
pub fn check_upload<R: Read + Seek>(
    src: R,
    file_name: &str,
    sender: &Counterpart,
    config: &Config,
) -> Result<Checked, SchemaError> {
    let expect = Expect {
        sender,
        config,
        today: today(config.gateway.utc_offset()),
        file_name,
    };
    check_archive(
        src,
        Limits::from(&config.gateway.archive),
        &config.gateway.schema_dir,
        &expect,
        sender.language,
    )
}

/// The entries of an archive by role, with names relative to its top folder.
struct Layout {
    top: String,
    index: Entry,
    summary: Option<Entry>,
    data: Vec<Entry>,
    claims: Vec<Entry>,
}

impl Layout {
    /// Sorts the entries; `None` when the archive cannot be read as the format at all.
    fn of(entries: &[Entry], findings: &mut Vec<Observation>) -> Option<Layout> {
        let tops: std::collections::BTreeSet<&str> = entries
            .iter()
            .map(|e| e.name.split_once('/').map_or("", |(top, _)| top))
            .collect();
        let top = match tops.into_iter().collect::<Vec<_>>().as_slice() {
            [top] if !top.is_empty() => (*top).to_owned(),
            _ => {
                findings.push(Observation::new(
                    Rule::LayoutTopFolder,
                    Text::new(
                        "アーカイブの中身はすべて、zipファイルと同じ名前のフォルダ1つに入れてください",
                        "everything in the archive must be inside one top folder named like the zip file",
                    ),
                ));
                return None;
            }
        };
        let (mut index, mut summary) = (None, None);
        let (mut data, mut claims) = (Vec::new(), Vec::new());
        let before = findings.len();
        for e in entries {
            let name = e.name[top.len()..].trim_start_matches('/');
            let in_dir = |dir: &str| {
                name.strip_prefix(dir)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
            };
            let mut relative = e.clone();
            relative.name = name.to_owned();
            match name {
                "" => {}
                format::INDEX => index = Some(relative),
                format::SUMMARY => summary = Some(relative),
                format::DATA_DIR | format::CLAIMS_DIR if e.is_dir => {}
                _ if name.starts_with(format::XSD_DIR) => {}
                _ if in_dir(format::DATA_DIR) && !e.is_dir => data.push(relative),
                _ if in_dir(format::CLAIMS_DIR) && !e.is_dir => claims.push(relative),
                _ => findings.push(
                    Observation::new(
                        Rule::LayoutUnexpected,
                        Text::new(
                            format!(
                                "様式にないファイル・フォルダです（{}、{}、{}、{}、{} のみ）",
                                format::INDEX,
                                format::SUMMARY,
                                format::DATA_DIR,
                                format::CLAIMS_DIR,
                                format::XSD_DIR
                            ),
                            format!(
                                "only {}, {} and files directly under {}, {} or under {} belong in the top folder",
                                format::INDEX,
                                format::SUMMARY,
                                format::DATA_DIR,
                                format::CLAIMS_DIR,
                                format::XSD_DIR
                            ),
                        ),
                    )
                    .in_file(name),
                ),
            }
        }
        let _ = before;
        if index.is_none() {
            findings.push(
                Observation::new(
                    Rule::LayoutMissing,
                    Text::new(
                        format!("{} がありません", format::INDEX),
                        format!("the archive has no {} in its top folder", format::INDEX),
                    ),
                )
                .in_file(format::INDEX),
            );
        }
        if data.is_empty() {
            findings.push(Observation::new(
                Rule::LayoutEmpty,
                Text::new(
                    format!("{} にファイルがありません", format::DATA_DIR),
                    format!("the archive holds no files under {}", format::DATA_DIR),
                ),
            ));
        }
        if summary.is_some() == claims.is_empty() {
            let (ja, en) = if summary.is_some() {
                (
                    format!(
                        "{} がありますが {} にファイルがありません",
                        format::SUMMARY,
                        format::CLAIMS_DIR
                    ),
                    format!(
                        "{} is present but {} holds no files",
                        format::SUMMARY,
                        format::CLAIMS_DIR
                    ),
                )
            } else {
                (
                    format!(
                        "{} にファイルがありますが {} がありません",
                        format::CLAIMS_DIR,
                        format::SUMMARY
                    ),
                    format!(
                        "{} holds files but {} is missing",
                        format::CLAIMS_DIR,
                        format::SUMMARY
                    ),
                )
            };
            let mut finding = Observation::new(Rule::LayoutClaimsSummary, Text::new(ja, en));
            if summary.is_some() {
                finding = finding.in_file(format::SUMMARY);
            }
            findings.push(finding);
        }
        let index = index?;
        if data.is_empty() {
            return None;
        }
        Some(Layout {
            top,
            index,
            summary,
            data,
            claims,
        })
    }
}

/// One archive being checked.
struct Run<'a, R: Read + Seek> {
    archive: &'a mut Archive<R>,
    catalog: &'a mut Catalog,
    expect: &'a Expect<'a>,
    policy: Policy<'a>,
    findings: &'a mut Vec<Observation>,
    /// Files of each edition other than the current one: the first (and its root element's
    /// line), and how many.
    editions: BTreeMap<Edition, (String, Option<u32>, usize)>,
}

impl<R: Read + Seek> Run<'_, R> {
    /// Whether a finding so far rejects the file.
    fn rejects(&self) -> bool {
        self.findings
            .iter()
            .any(|f| self.policy.severity(f.rule) == Severity::Reject)
    }

    fn too_many(&self) -> bool {
        self.findings.len() > MAX_FINDINGS
    }

    fn check(&mut self, layout: &Layout) -> Header {
        let expect = self.expect;
        let today = expect.today;
        let stem = expect
            .file_name
            .strip_suffix(".p7m")
            .unwrap_or(expect.file_name);
        let name = ArchiveName::parse(stem).filter(|_| stem.ends_with(".zip"));

        let mut header = Header::default();
        let Some(index) = self.document(&layout.index, Role::Index) else {
            return header;
        };
        header = rules::index(&index, expect, self.findings);
        rules::record_count(
            &index,
            &header,
            (layout.data.len() + layout.claims.len()) as u64,
            self.findings,
        );
        drop(index);
        rules::archive_name(name.as_ref(), &layout.top, &header, expect, self.findings);

        let base = |e: &Entry| e.name.rsplit('/').next().unwrap_or_default().to_owned();
        let data_bases: Vec<String> = layout.data.iter().map(base).collect();
        let claim_bases: Vec<String> = layout.claims.iter().map(base).collect();
        let data_refs: Vec<&str> = data_bases.iter().map(String::as_str).collect();
        let claim_refs: Vec<&str> = claim_bases.iter().map(String::as_str).collect();
        let data_names = rules::record_names(
            Folder::Data,
            &data_refs,
            &header,
            name.as_ref(),
            self.findings,
        );
        let claim_names = rules::record_names(
            Folder::Claims,
            &claim_refs,
            &header,
            name.as_ref(),
            self.findings,
        );
        if !layout.claims.is_empty() {
            rules::pairing(&data_refs, &claim_refs, self.findings);
        }
        if self.rejects() {
            // The routing facts or the layout are wrong: reading every record would only
            // bury the finding that matters.
            return header;
        }

        let kind = header.kind();
        for (entry, name) in layout.data.iter().zip(&data_names) {
            if self.too_many() {
                return header;
            }
            let role = match name.as_ref().map_or(kind, |n| n.kind) {
                DocKind::Checkup => Role::CheckupCda,
                DocKind::Guidance => Role::GuidanceCda,
            };
            if let Some(doc) = self.document(entry, role) {
                rules::cda(&entry.name, &doc, &header, today, self.findings);
            }
        }
        let mut totals = rules::Totals::new();
        for (entry, name) in layout.claims.iter().zip(&claim_names) {
            if self.too_many() {
                return header;
            }
            let role = match name.as_ref().map_or(kind, |n| n.kind) {
                DocKind::Checkup => Role::CheckupClaim,
                DocKind::Guidance => Role::GuidanceClaim,
            };
            match self.document(entry, role) {
                Some(doc) => rules::claim(
                    &entry.name,
                    &doc,
                    &header,
                    today,
                    &mut totals,
                    self.findings,
                ),
                // A claim that could not be read cannot be added up.
                None => totals.complete = false,
            }
        }
        if let Some(summary) = &layout.summary
            && let Some(doc) = self.document(summary, Role::Summary)
        {
            rules::summary(&doc, &header, &totals, self.findings);
        }
        self.report_editions();
        header
    }

    /// Reads, parses and schema-checks one entry; `None` (with findings) when it fails.
    fn document(&mut self, entry: &Entry, role: Role) -> Option<xml::Tree> {
        let fail = |findings: &mut Vec<Observation>, r: Finding| {
            findings.push(Observation::from_finding(r));
            None
        };
        let bytes = match self.archive.read(entry) {
            Ok(b) => b,
            Err(r) => return fail(self.findings, r.in_file(&entry.name)),
        };
        let read = xml::check_text(&entry.name, &bytes)
            .and_then(|text| self.catalog.validate(role, &entry.name, text));
        let (doc, checked) = match read {
            Ok(d) => d,
            Err(r) => return fail(self.findings, r),
        };
        if let Some(edition) = checked.edition
            && edition != Edition::Current
        {
            let line = doc.root().and_then(|r| r.line());
            let seen = self
                .editions
                .entry(edition)
                .or_insert_with(|| (entry.name.clone(), line, 0));
            seen.2 += 1;
        }
        if checked.findings.is_empty() {
            Some(doc)
        } else {
            self.findings
                .extend(checked.findings.into_iter().map(Observation::from_finding));
            None
        }
    }

    /// One finding per edition other than the current one: refused unless the configuration
    /// accepts it, a warning otherwise.
    fn report_editions(&mut self) {
        let accepted = &self.expect.config.gateway.validation.editions;
        for (edition, (first, line, count)) in std::mem::take(&mut self.editions) {
            let others = count - 1;
            let (more_ja, more_en) = if others > 0 {
                (
                    format!("ほか {others} ファイル"),
                    format!(" and {others} more files"),
                )
            } else {
                (String::new(), String::new())
            };
            let finding = if accepted.iter().any(|e| e == edition.id()) {
                Observation::new(
                    Rule::EditionNonCurrent,
                    Text::new(
                        format!(
                            "{first}{more_ja}は現行版ではなく{}（{}）の様式です。受け付けましたが、現行版での作成をお願いします",
                            edition.name_ja(),
                            edition.id()
                        ),
                        format!(
                            "{first}{more_en} follow the {} edition ({}), not the current one: accepted, but please send the current edition",
                            edition.name_en(),
                            edition.id()
                        ),
                    ),
                )
            } else {
                Observation::new(
                    Rule::EditionNotAccepted,
                    Text::new(
                        format!(
                            "{first}{more_ja}は{}（{}）の様式で、このゲートウェイでは受け付けていません。現行版で作成してください",
                            edition.name_ja(),
                            edition.id()
                        ),
                        format!(
                            "{first}{more_en} follow the {} edition ({}), which this gateway does not accept: send the current edition",
                            edition.name_en(),
                            edition.id()
                        ),
                    ),
                )
            };
            self.findings.push(finding.in_file(first).at_line(line));
        }
    }
}

/// Today's date at the gateway's offset, against which "not in the future" is read.
pub fn today(offset: time::UtcOffset) -> Date {
    time::OffsetDateTime::now_utc().to_offset(offset).date()
}
