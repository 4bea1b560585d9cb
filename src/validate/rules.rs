//! The rules the schemas cannot express, read from documents that already passed their schema:
//! who sends to whom (the index against the uploader and the configuration), the archive's and
//! the records' names against the index, the check digits, the dates, each person's insurer
//! against the receiver, and the summary's counts and totals against the claims.

use std::collections::BTreeMap;

use time::Date;

use super::finding::{Observation, Rule, Text};
use super::format::{self, ArchiveName, DocKind, Party, RecordName};
use super::xml::{Element, Tree};
use crate::config::{Config, Counterpart, CounterpartKind};
use crate::numbers::{InsurerNumber, Number, NumberError, NumberKind};

/// What the index says, as far as it could be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub interaction_type: Option<u8>,
    pub created: Option<String>,
    /// The sender's number, once it is the uploader's.
    pub sender: Option<Number>,
    /// The receiver's party (by its id root) and number, once it is a counterpart's or the
    /// agency's.
    pub receiver: Option<(Party, Number)>,
    pub service_event: Option<u8>,
    pub record_count: Option<u64>,
}

impl Header {
    /// What the archive carries, by its service event type (checkup unless it says guidance).
    pub fn kind(&self) -> DocKind {
        self.service_event
            .and_then(DocKind::from_service_event)
            .unwrap_or(DocKind::Checkup)
    }

    /// The receiver's number when the receiver is an insurer: every person must be its.
    fn insurer(&self) -> Option<&InsurerNumber> {
        match &self.receiver {
            Some((Party::Insurer, n)) => n.insurer(),
            _ => None,
        }
    }
}

/// Who uploaded the archive, under what name, and what the gateway knows.
pub struct Expect<'a> {
    pub sender: &'a Counterpart,
    pub config: &'a Config,
    pub today: Date,
    /// The name the file was uploaded under.
    pub file_name: &'a str,
}

impl Expect<'_> {
    /// The party the archive must name as its sender: the agency for the archives the gateway
    /// sorts out of an agency-addressed one (checked like any upload before they go out),
    /// otherwise the uploader's kind.
    pub fn sender_party(&self) -> Party {
        if self.sender.id == crate::config::AGENCY_ROUTE
            && matches!(&self.sender.number,
                Number::Agency(n) if self.config.gateway.agency_number.as_ref() == Some(n))
        {
            Party::Agency
        } else {
            party_of(self.sender.kind)
        }
    }
}

/// The party a counterpart of `kind` is in the exchange.
pub fn party_of(kind: CounterpartKind) -> Party {
    match kind {
        CounterpartKind::Clinic => Party::Institution,
        CounterpartKind::Insurer => Party::Insurer,
    }
}

/// The counterpart kind a party is served as, if the gateway serves it.
pub fn kind_of(party: Party) -> Option<CounterpartKind> {
    match party {
        Party::Institution => Some(CounterpartKind::Clinic),
        Party::Insurer => Some(CounterpartKind::Insurer),
        Party::Agency | Party::LocalGovernment => None,
    }
}

fn at(rule: Rule, file: &str, node: Option<&Element>, ja: String, en: String) -> Observation {
    Observation::new(rule, Text::new(ja, en))
        .in_file(file)
        .at_line(node.and_then(Element::line))
}

/// The `id` children of `node` with `root`, by their `extension`.
fn id_with_root<'t>(node: &Element<'t>, root: &str) -> Option<(Element<'t>, &'t str)> {
    node.children()
        .filter(|c| c.name() == "id")
        .find(|c| c.attribute("root") == Some(root))
        .and_then(|c| c.attribute("extension").map(|e| (c, e)))
}

/// Reads the index and checks it against the uploader and the configuration.
pub fn index(doc: &Tree, expect: &Expect<'_>, findings: &mut Vec<Observation>) -> Header {
    use format::index as el;
    let file = format::INDEX;
    let mut header = Header::default();
    let Some(root) = doc.root() else {
        return header;
    };
    let attr = |name: &str, attr: &str| {
        root.child(name)
            .and_then(|n| n.attribute(attr).map(|v| (n, v)))
    };

    header.interaction_type = attr(el::INTERACTION_TYPE, "code").and_then(|(_, v)| v.parse().ok());
    if let Some((node, value)) = attr(el::CREATION_TIME, "value") {
        date(
            file,
            Some(&node),
            "作成日",
            "the creation date",
            value,
            expect.today,
            findings,
        );
        header.created = Some(value.to_owned());
    }
    header.service_event = attr(el::SERVICE_EVENT_TYPE, "code").and_then(|(_, v)| v.parse().ok());
    header.record_count = attr(el::TOTAL_RECORD_COUNT, "value").and_then(|(_, v)| v.parse().ok());

    // The sender: the uploading counterpart, under its party's root.
    let uploader = expect.sender;
    let sender_party = expect.sender_party();
    if let Some(node) = root.descend(&[el::SENDER, "id"]) {
        let root_oid = node.attribute("root").unwrap_or_default();
        let number = node.attribute("extension").unwrap_or_default();
        if root_oid != sender_party.oid() {
            let (ja, en) = sender_party.names();
            findings.push(at(
                Rule::IndexSenderNumber,
                file,
                Some(&node),
                format!(
                    "送信者の識別子は{ja}のOID {} でなければなりません（{root_oid}）",
                    sender_party.oid()
                ),
                format!(
                    "the sender must be {en} identified under root {} (found {root_oid})",
                    sender_party.oid()
                ),
            ));
        } else if uploader.number != number {
            findings.push(at(
                Rule::IndexSenderMismatch,
                file,
                Some(&node),
                format!(
                    "送信者番号 {number} が、送信したアカウント {}（{}）の番号と一致しません",
                    uploader.id, uploader.number
                ),
                format!(
                    "the sender is {number}, but the archive was uploaded by {} ({})",
                    uploader.id, uploader.number
                ),
            ));
        } else {
            header.sender = Some(uploader.number.clone());
        }
    }

    // The receiver: a counterpart of the gateway, under a root it serves.
    match root.descend(&[el::RECEIVER, "id"]) {
        None => findings.push(at(
            Rule::IndexReceiverNumber,
            file,
            Some(&root),
            "受信者（receiver）の記載がありません。送付先を判断できません".into(),
            "the index names no receiver: the gateway cannot tell where the archive goes".into(),
        )),
        Some(node) => {
            let root_oid = node.attribute("root").unwrap_or_default();
            let number = node.attribute("extension").unwrap_or_default();
            let agency_number = expect.config.gateway.agency_number.as_ref();
            let agency = agency_number.map(|a| a.as_str());
            match Party::from_oid(root_oid).and_then(|p| kind_of(p).map(|k| (p, k))) {
                // Addressed to the gateway's agency: sorted by insurer (docs/sorting.md).
                None if root_oid == format::oid::AGENCY && agency.is_some() => {
                    if let Some(a) = agency_number.filter(|a| **a == *number)
                        && expect.config.may_send_to_agency(&uploader.id)
                    {
                        header.receiver = Some((Party::Agency, Number::Agency(a.clone())));
                    } else {
                        findings.push(at(
                            Rule::IndexReceiverUnknown,
                            file,
                            Some(&node),
                            format!("受信者 {number} は、この送信者が送付できる代行機関ではありません（代行機関番号 {}）", agency.unwrap_or_default()),
                            format!("the receiver {number} is not the agency this sender may send to (agency number {})", agency.unwrap_or_default()),
                        ));
                    }
                }
                None => findings.push(at(
                    Rule::IndexReceiverNumber,
                    file,
                    Some(&node),
                    format!("受信者のOID {root_oid} は、このゲートウェイが送付できる保険者・健診機関のものではありません"),
                    format!("the receiver root {root_oid} is not an insurer or institution this gateway delivers to"),
                )),
                Some((party, kind)) => {
                    if let Some(parsed) = number_ok(file, Some(&node), "受信者", "the receiver", kind.number_kind(), number, findings)
                    {
                        match expect.config.counterpart_by_number(&parsed) {
                            Some(_) => header.receiver = Some((party, parsed)),
                            None => {
                                let (ja, en) = party.names();
                                findings.push(at(
                                    Rule::IndexReceiverUnknown,
                                    file,
                                    Some(&node),
                                    format!("受信者 {number} は、このゲートウェイが送付する{ja}として登録されていません"),
                                    format!("the receiver {number} is not {en} this gateway delivers to"),
                                ));
                            }
                        }
                    }
                }
            }
        }
    }

    // The interaction type against the roots of both parties (ORCA's pairing).
    if let (Some(code), Some(node)) = (header.interaction_type, root.child(el::INTERACTION_TYPE)) {
        let party_of = |element: &str| {
            root.descend(&[element, "id"])
                .and_then(|n| n.attribute("root"))
                .and_then(Party::from_oid)
        };
        let (sender_root, receiver_root) = (party_of(el::SENDER), party_of(el::RECEIVER));
        if let Some((from, to)) = format::interaction_parties(code)
            && (sender_root.is_some_and(|p| p != from) || receiver_root.is_some_and(|p| p != to))
        {
            let (from_ja, from_en) = from.names();
            let (to_ja, to_en) = to.names();
            findings.push(at(
                Rule::IndexInteractionType,
                file,
                Some(&node),
                format!("種別 {code} は{from_ja}から{to_ja}への送付ですが、送信者・受信者の識別子と合いません"),
                format!("interaction type {code} is sent by {from_en} to {to_en}, which the sender and receiver ids do not match"),
            ));
        }
    }
    header
}

/// Checks a number's shape and check digit; the number when it is well formed.
fn number_ok(
    file: &str,
    node: Option<&Element>,
    what_ja: &str,
    what_en: &str,
    kind: NumberKind,
    number: &str,
    findings: &mut Vec<Observation>,
) -> Option<Number> {
    let (kind_ja, _) = match kind {
        NumberKind::Institution => Party::Institution.names(),
        NumberKind::Insurer => Party::Insurer.names(),
    };
    match Number::parse(kind, number) {
        Ok(n) => Some(n),
        Err(e @ (NumberError::Shape { .. } | NumberError::Length { .. })) => {
            findings.push(at(
                Rule::NumberMalformed,
                file,
                node,
                format!(
                    "{what_ja}の{kind_ja}番号 \"{number}\" は {} 桁の数字でなければなりません",
                    kind.digits()
                ),
                format!("{what_en}: {e}"),
            ));
            None
        }
        Err(
            e @ NumberError::CheckDigit {
                found, expected, ..
            },
        ) => {
            findings.push(at(
                Rule::NumberCheckDigit,
                file,
                node,
                format!("{what_ja}の{kind_ja}番号 {number} の検証番号が誤っています（{found}、正しくは {expected}）"),
                format!("{what_en}: {e}"),
            ));
            None
        }
    }
}

/// A date value (`YYYYMMDD…`) must be a real date, not in the future.
pub fn date(
    file: &str,
    node: Option<&Element>,
    what_ja: &str,
    what_en: &str,
    value: &str,
    today: Date,
    findings: &mut Vec<Observation>,
) {
    match format::parse_date(value) {
        None => findings.push(at(
            Rule::DateInvalid,
            file,
            node,
            format!("{what_ja} \"{value}\" は存在しない日付です"),
            format!("{what_en} {value:?} is not a real date (YYYYMMDD)"),
        )),
        Some(d) if d > today => findings.push(at(
            Rule::DateFuture,
            file,
            node,
            format!("{what_ja} {value} は未来の日付です"),
            format!("{what_en} {value} is in the future"),
        )),
        Some(_) => {}
    }
}

/// The archive's own name and its top folder against the uploader and the index.
pub fn archive_name(
    name: Option<&ArchiveName>,
    top: &str,
    header: &Header,
    expect: &Expect<'_>,
    findings: &mut Vec<Observation>,
) {
    let file_name = expect.file_name;
    let Some(name) = name else {
        findings.push(Observation::new(
            Rule::ArchiveName,
            Text::new(
                format!("ファイル名 {file_name} が「送信者番号_受信者番号_作成日送付回数_実施区分.zip」の形式ではありません"),
                format!("the file name {file_name} is not <sender>_<receiver>_<YYYYMMDD><N>_<X>.zip"),
            ),
        ));
        return;
    };
    if expect.sender.number != name.sender.as_str() {
        findings.push(Observation::new(
            Rule::ArchiveSender,
            Text::new(
                format!(
                    "ファイル名の送信者番号 {} が、送信したアカウント {}（{}）の番号と一致しません",
                    name.sender, expect.sender.id, expect.sender.number
                ),
                format!(
                    "the file name's sender {} is not the uploading account {} ({})",
                    name.sender, expect.sender.id, expect.sender.number
                ),
            ),
        ));
    }
    let mut differ = Vec::new();
    if let Some((_, receiver)) = &header.receiver
        && *receiver != name.receiver.as_str()
    {
        differ.push((
            "受信者番号",
            "receiver",
            name.receiver.clone(),
            receiver.to_string(),
        ));
    }
    differ.extend(date_and_event_differ(
        header,
        &name.date,
        name.service_event,
    ));
    for (ja, en, in_name, in_index) in differ {
        findings.push(Observation::new(
            Rule::ArchiveNameMismatch,
            Text::new(
                format!(
                    "ファイル名の{ja} {in_name} が {} の {in_index} と異なります",
                    format::INDEX
                ),
                format!(
                    "the file name's {en} {in_name} differs from {in_index} in {}",
                    format::INDEX
                ),
            ),
        ));
    }
    let stem = name.to_string();
    if top != stem {
        findings.push(Observation::new(
            Rule::LayoutFolderName,
            Text::new(
                format!("最上位フォルダ名 {top} がファイル名 {stem} と一致しません"),
                format!("the top folder {top} is not named like the file ({stem})"),
            ),
        ));
    }
}

/// A name field that differs from the index: (Japanese, English, in the name, in the index).
type Differs = (&'static str, &'static str, String, String);

/// The creation date and 実施区分 a name carries, against the index.
fn date_and_event_differ(header: &Header, date: &str, event: u8) -> Vec<Differs> {
    let mut differ = Vec::new();
    if let Some(created) = &header.created
        && !created.starts_with(date)
    {
        differ.push(("作成日", "creation date", date.to_owned(), created.clone()));
    }
    if let Some(expected) = header.service_event
        && expected != event
    {
        differ.push((
            "実施区分",
            "service event type",
            event.to_string(),
            expected.to_string(),
        ));
    }
    differ
}

/// Checks the names of the per-person files of one folder (base names, in archive order)
/// against the index; returns each file's kind where its name tells it.
pub fn record_names(
    folder: format::Folder,
    bases: &[&str],
    header: &Header,
    archive: Option<&ArchiveName>,
    findings: &mut Vec<Observation>,
) -> Vec<Option<RecordName>> {
    let dir = folder.dir();
    let kind = header.kind();
    let prefix = match folder {
        format::Folder::Data => kind.data_prefix(),
        format::Folder::Claims => kind.claims_prefix(),
    };
    let mut names = Vec::with_capacity(bases.len());
    for base in bases {
        let path = format!("{dir}{base}");
        let name = RecordName::parse(base).filter(|n| n.folder == folder);
        let Some(name) = name else {
            findings.push(Observation::new(
                Rule::NamePattern,
                Text::new(
                    format!("ファイル名が「{prefix}＋送信者番号10桁＋作成日8桁＋送付回数＋実施区分＋連番6桁.xml」の形式ではありません"),
                    format!("the name is not {prefix}<sender 10 digits><YYYYMMDD><N><X><serial 6 digits>.xml"),
                ),
            ).in_file(&path));
            names.push(None);
            continue;
        };
        // An 8-digit sender (insurer, agency) fills the 10 digits with leading zeros.
        if let Some(sender) = &header.sender
            && name.sender != format!("{sender:0>width$}", width = format::RECORD_SENDER_DIGITS)
        {
            findings.push(
                Observation::new(
                    Rule::NameSender,
                    Text::new(
                        format!(
                            "ファイル名の送信者番号 {} が {} の送信者 {sender} と異なります",
                            name.sender,
                            format::INDEX
                        ),
                        format!(
                            "the name carries sender {}, but the sender in {} is {sender}",
                            name.sender,
                            format::INDEX
                        ),
                    ),
                )
                .in_file(&path),
            );
        }
        let mut differ = date_and_event_differ(header, &name.date, name.service_event);
        if let Some(archive) = archive
            && archive.send_count != name.send_count
        {
            differ.push((
                "送付回数",
                "send count",
                name.send_count.to_string(),
                archive.send_count.to_string(),
            ));
        }
        for (ja, en, in_name, expected) in differ {
            findings.push(
                Observation::new(
                    Rule::NameMismatch,
                    Text::new(
                        format!(
                            "ファイル名の{ja} {in_name} がアーカイブの {expected} と異なります"
                        ),
                        format!("the name's {en} {in_name} differs from the archive's {expected}"),
                    ),
                )
                .in_file(&path),
            );
        }
        if name.kind != kind {
            let (ja, en) = kind_names(name.kind);
            findings.push(
                Observation::new(
                    Rule::ServiceEventMismatch,
                    Text::new(
                        format!(
                            "実施区分 {} のアーカイブに{ja}のファイルがあります",
                            kind.service_event()
                        ),
                        format!(
                            "a {en} file in an archive whose service event type is {}",
                            kind.service_event()
                        ),
                    ),
                )
                .in_file(&path),
            );
        }
        names.push(Some(name));
    }
    let mut sorted: Vec<&RecordName> = names.iter().flatten().collect();
    sorted.sort_unstable_by_key(|n| n.serial);
    let out_of_step = sorted.iter().enumerate().find(|(i, n)| match i {
        0 => n.serial > 1,
        _ => n.serial != sorted[i - 1].serial + 1,
    });
    if let Some((_, n)) = out_of_step {
        let first = sorted[0].serial;
        findings.push(
            Observation::new(
                Rule::NameSerial,
                Text::new(
                    format!("{dir} の連番が 000000 または 000001 から連続していません（{first:06} から始まり、{:06} で途切れています）", n.serial),
                    format!("the serials under {dir} do not run on from 000000 or 000001 (they start at {first:06}; {:06} is out of step)", n.serial),
                ),
            )
            .in_file(n.path()),
        );
    }
    names
}

/// With claims, every DATA file has its CLAIMS partner (the same name but for the first
/// letter) and the reverse.
pub fn pairing(data: &[&str], claims: &[&str], findings: &mut Vec<Observation>) {
    let key = |base: &str| base.get(1..).unwrap_or_default().to_owned();
    let data_keys: BTreeMap<String, &str> = data.iter().map(|b| (key(b), *b)).collect();
    let claim_keys: BTreeMap<String, &str> = claims.iter().map(|b| (key(b), *b)).collect();
    for (mine, others, dir, other_dir) in [
        (
            &data_keys,
            &claim_keys,
            format::DATA_DIR,
            format::CLAIMS_DIR,
        ),
        (
            &claim_keys,
            &data_keys,
            format::CLAIMS_DIR,
            format::DATA_DIR,
        ),
    ] {
        for (k, base) in mine {
            if !others.contains_key(k) {
                findings.push(Observation::new(
                    Rule::NameUnpaired,
                    Text::new(
                        format!("対応する {other_dir} のファイル（先頭の1文字だけが異なる名前）がありません"),
                        format!("there is no partner file under {other_dir} (the same name but for its first letter)"),
                    ),
                ).in_file(format!("{dir}{base}")));
            }
        }
    }
}

fn kind_names(kind: DocKind) -> (&'static str, &'static str) {
    match kind {
        DocKind::Checkup => ("特定健診", "checkup"),
        DocKind::Guidance => ("特定保健指導", "guidance"),
    }
}

/// A person's insurer (in a CDA or a claim) against the receiver, and its check digit.
fn person_insurer(
    path: &str,
    node: &Element,
    number: &str,
    header: &Header,
    findings: &mut Vec<Observation>,
) {
    let Some(Number::Insurer(number)) = number_ok(
        path,
        Some(node),
        "受診者の保険者",
        "the person's insurer",
        NumberKind::Insurer,
        number,
        findings,
    ) else {
        return;
    };
    if let Some(receiver) = header.insurer()
        && number != *receiver
    {
        findings.push(at(
            Rule::DataInsurer,
            path,
            Some(node),
            format!("受診者の保険者番号 {number} が、送付先の保険者 {receiver} と異なります。他の保険者の受診者は送付できません"),
            format!("the person's insurer {number} is not the receiver {receiver}: persons of another insurer cannot be sent to it"),
        ));
    }
}

/// The rules of one CDA document (DATA/h… or DATA/g…).
pub fn cda(path: &str, doc: &Tree, header: &Header, today: Date, findings: &mut Vec<Observation>) {
    let Some(root) = doc.root() else {
        return;
    };
    for (date_path, (ja, en)) in format::CDA_DATES.iter().zip(CDA_DATE_NAMES) {
        if let Some(node) = root.descend(date_path)
            && let Some(value) = node.attribute("value")
        {
            date(path, Some(&node), ja, en, value, today, findings);
        }
    }
    if let Some(patient) = root.descend(format::CDA_PATIENT_IDS)
        && let Some((node, insurer)) = id_with_root(&patient, format::oid::INSURER)
    {
        person_insurer(path, &node, insurer, header, findings);
    }
    if let Some(org) = root.descend(format::CDA_AUTHOR_ORG)
        && let Some((node, institution)) = id_with_root(&org, format::oid::INSTITUTION)
        && let Some(sender) = &header.sender
        && sender.kind() == NumberKind::Institution
        && *sender != institution
    {
        findings.push(at(
            Rule::DataSenderMismatch,
            path,
            Some(&node),
            format!(
                "作成機関 {institution} が {} の送信者 {sender} と異なります",
                format::INDEX
            ),
            format!(
                "the authoring institution is {institution}, but the sender in {} is {sender}",
                format::INDEX
            ),
        ));
    }
}

/// Names of [`format::CDA_DATES`], in order.
const CDA_DATE_NAMES: [(&str, &str); 5] = [
    ("文書作成日", "the document date"),
    ("生年月日", "the birth date"),
    ("作成日時", "the authoring time"),
    ("実施日（開始）", "the service start date"),
    ("実施日（終了）", "the service end date"),
];

/// Sums of the claims' amounts, by summary element.
#[derive(Debug)]
pub struct Totals {
    pub claims: u64,
    pub sums: BTreeMap<&'static str, (u64, bool)>,
    /// Every claim was read: only then do the counts and sums say anything.
    pub complete: bool,
}

impl Totals {
    pub fn new() -> Totals {
        Totals {
            claims: 0,
            sums: BTreeMap::new(),
            complete: true,
        }
    }
}

impl Default for Totals {
    fn default() -> Totals {
        Totals::new()
    }
}

/// The rules of one claim (CLAIMS/c… or CLAIMS/p…), adding its amounts to `totals`.
pub fn claim(
    path: &str,
    doc: &Tree,
    header: &Header,
    today: Date,
    totals: &mut Totals,
    findings: &mut Vec<Observation>,
) {
    let Some(root) = doc.root() else {
        return;
    };
    totals.claims += 1;
    let kind = if root.name() == DocKind::Guidance.claims_root() {
        DocKind::Guidance
    } else {
        DocKind::Checkup
    };
    if let Some(node) = root.descend(&["encounter", "serviceEventType"]) {
        service_event(path, &node, header, findings);
    }
    if let Some(node) = root.descend(&["subjectPerson", "insuranceCard", "insurerNumber"])
        && let Some(insurer) = node.attribute("extension")
    {
        person_insurer(path, &node, insurer, header, findings);
    }
    if let Some(node) = root.descend(&["subjectPerson", "birthTime"])
        && let Some(value) = node.attribute("value")
    {
        date(
            path,
            Some(&node),
            "生年月日",
            "the birth date",
            value,
            today,
            findings,
        );
    }
    let settlement = root.child("settlement");
    for (element, checkup, guidance) in format::SUMMARY_TOTALS {
        let at_path = match kind {
            DocKind::Checkup => *checkup,
            DocKind::Guidance => *guidance,
        };
        let amount = settlement
            .as_ref()
            .filter(|_| !at_path.is_empty())
            .and_then(|s| s.descend(at_path))
            .and_then(|n| n.attribute("value"))
            .and_then(|v| v.parse::<u64>().ok());
        let entry = totals.sums.entry(element).or_default();
        if let Some(a) = amount {
            entry.0 = entry.0.saturating_add(a);
            entry.1 = true;
        }
    }
}

/// A `serviceEventType` element (of a claim or the summary) against the index's.
fn service_event(file: &str, node: &Element, header: &Header, findings: &mut Vec<Observation>) {
    if let Some(code) = node.attribute("code")
        && let Some(event) = header.service_event
        && code != event.to_string()
    {
        findings.push(at(
            Rule::ServiceEventMismatch,
            file,
            Some(node),
            format!(
                "実施区分 {code} が {} の {event} と異なります",
                format::INDEX
            ),
            format!(
                "the service event type {code} differs from {event} in {}",
                format::INDEX
            ),
        ));
    }
}

/// The summary against the index and the claims.
pub fn summary(doc: &Tree, header: &Header, totals: &Totals, findings: &mut Vec<Observation>) {
    use format::summary as el;
    let file = format::SUMMARY;
    let Some(root) = doc.root() else {
        return;
    };
    if let Some(node) = root.child(el::SERVICE_EVENT_TYPE) {
        service_event(file, &node, header, findings);
    }
    if !totals.complete {
        return;
    }
    if let Some(node) = root.child(el::TOTAL_SUBJECT_COUNT) {
        let count = node.attribute("value").and_then(|v| v.parse::<u64>().ok());
        if count != Some(totals.claims) {
            let shown = count.map_or("?".into(), |c| c.to_string());
            findings.push(at(
                Rule::SummarySubjectCount,
                file,
                Some(&node),
                format!(
                    "対象者数 {shown} が {} のファイル数 {} と異なります",
                    format::CLAIMS_DIR,
                    totals.claims
                ),
                format!(
                    "the subject count is {shown}, but {} holds {} files",
                    format::CLAIMS_DIR,
                    totals.claims
                ),
            ));
        }
    }
    for (element, (sum, present)) in &totals.sums {
        let node = root.child(element);
        let stated = node
            .as_ref()
            .and_then(|n| n.attribute("value"))
            .and_then(|v| v.parse::<u64>().ok());
        let agrees = match stated {
            Some(v) => v == *sum,
            None => !*present || *sum == 0,
        };
        if !agrees {
            let label = match *element {
                el::TOTAL_COST => "費用額合計",
                el::TOTAL_PAYMENT => "窓口負担額合計",
                el::TOTAL_OTHER_PROGRAM => "他制度負担額合計",
                _ => "請求額合計",
            };
            let shown = stated.map_or("（記載なし）".into(), |v| v.to_string());
            let shown_en = stated.map_or("absent".into(), |v| v.to_string());
            findings.push(at(
                Rule::SummaryTotals,
                file,
                node.as_ref().or(Some(&root)),
                format!(
                    "{label}（{element}）{shown} が {} の合計 {sum} と異なります",
                    format::CLAIMS_DIR
                ),
                format!(
                    "{element} is {shown_en}, but the claims under {} add up to {sum}",
                    format::CLAIMS_DIR
                ),
            ));
        }
    }
}

/// The index's record count against the files present.
pub fn record_count(doc: &Tree, header: &Header, files: u64, findings: &mut Vec<Observation>) {
    if header.record_count == Some(files) {
        return;
    }
    let node = doc
        .root()
        .and_then(|r| r.child(format::index::TOTAL_RECORD_COUNT));
    let shown = header.record_count.map_or("?".into(), |c| c.to_string());
    findings.push(at(
        Rule::IndexCountMismatch,
        format::INDEX,
        node.as_ref(),
        format!(
            "総ファイル数 {shown} が {} と {} のファイル数の合計 {files} と異なります",
            format::DATA_DIR,
            format::CLAIMS_DIR
        ),
        format!(
            "the total record count is {shown}, but {} and {} hold {files} files",
            format::DATA_DIR,
            format::CLAIMS_DIR
        ),
    ));
}
