//! The rules that need the content of a file, or of several: the facts of `index.xml`, the
//! counts of `summary.xml`, the names and dates of the records, read from documents that
//! already passed their schema.

use libxml::tree::{Document, Node};
use time::Date;

use super::format_legacy::{self as format, RecordKind};
use super::xml::line;
use crate::config::{Config, Counterpart, CounterpartKind};
use crate::numbers::{self, NumberError, NumberKind};
use crate::receipts::Reason;

/// What the exchange header says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub interaction_type: Option<String>,
    pub sender_number: Option<String>,
    pub receiver_number: Option<String>,
    pub service_event: Option<String>,
    pub record_count: Option<u64>,
}

/// Who uploaded the archive and what the gateway knows, against which the header is read.
pub struct Expect<'a> {
    pub sender: &'a Counterpart,
    pub config: &'a Config,
    pub today: Date,
}

/// A finding at `node` of `file`.
fn at(rule: &str, file: &str, node: Option<&Node>, message: String) -> Reason {
    let mut r = Reason::new(rule, message).in_file(file);
    r.line = node.and_then(line);
    r
}

/// The element reached from `node` through child elements named `path`.
fn descend(node: &Node, path: &[&str]) -> Option<Node> {
    let mut here = node.clone();
    for name in path {
        here = here
            .get_child_elements()
            .into_iter()
            .find(|c| c.get_name() == *name)?;
    }
    Some(here)
}

/// Reads the header of `index.xml` and checks it against the uploader and the configuration.
pub fn check_index(doc: &Document, expect: &Expect<'_>, findings: &mut Vec<Reason>) -> Header {
    use format::index as el;
    let file = format::INDEX;
    let mut header = Header::default();
    let Some(root) = doc.get_root_element() else {
        return header;
    };
    let attr = |path: &[&str], name: &str| {
        descend(&root, path).and_then(|n| n.get_attribute(name).map(|v| (n, v)))
    };

    let sender_kind = expect.sender.kind;
    let mut receiver_kind = sender_kind.peer();
    if let Some((node, code)) = attr(&[el::INTERACTION_TYPE], "code") {
        match format::interaction_route(&code) {
            None => findings.push(at(
                "index.interaction-type",
                file,
                Some(&node),
                format!("interaction type {code} is not one the gateway knows"),
            )),
            Some((from, _)) if from != sender_kind => findings.push(at(
                "index.interaction-type",
                file,
                Some(&node),
                format!(
                    "interaction type {code} is sent by {}, but the uploader is {}",
                    kind_name(from),
                    kind_name(sender_kind)
                ),
            )),
            Some((_, to)) => receiver_kind = to,
        }
        header.interaction_type = Some(code);
    }
    if let Some((node, value)) = attr(&[el::CREATION_TIME], "value") {
        check_date(file, Some(&node), &value, expect.today, findings);
    }
    if let Some(number) = check_party(&root, el::SENDER, sender_kind, findings, |number, node| {
        (number != expect.sender.number).then(|| {
            at(
                "index.sender-mismatch",
                file,
                Some(node),
                format!(
                    "the sender is {number}, but the archive was uploaded by {} ({})",
                    expect.sender.id, expect.sender.number
                ),
            )
        })
    }) {
        header.sender_number = Some(number);
    }
    if let Some(number) = check_party(
        &root,
        el::RECEIVER,
        receiver_kind,
        findings,
        |number, node| {
            expect
                .config
                .counterpart_by_number(receiver_kind, number)
                .is_none()
                .then(|| {
                    at(
                        "index.receiver-unknown",
                        file,
                        Some(node),
                        format!(
                            "the receiver {number} is not {} this gateway delivers to",
                            kind_name(receiver_kind)
                        ),
                    )
                })
        },
    ) {
        header.receiver_number = Some(number);
    }
    header.service_event = attr(&[el::SERVICE_EVENT_TYPE], "code").map(|(_, v)| v);
    header.record_count =
        attr(&[el::TOTAL_RECORD_COUNT], "value").and_then(|(_, v)| v.parse().ok());
    header
}

/// Checks the identifier under `<{element}><id root extension/>`; returns the number when it
/// is well formed and passes `extra`.
fn check_party(
    root: &Node,
    element: &str,
    kind: CounterpartKind,
    findings: &mut Vec<Reason>,
    extra: impl FnOnce(&str, &Node) -> Option<Reason>,
) -> Option<String> {
    let file = format::INDEX;
    let node = descend(root, &[element, "id"])?;
    let rule = format!("index.{element}-number");
    let oid = format::party_oid(kind);
    if node.get_attribute("root").as_deref() != Some(oid) {
        findings.push(at(
            &rule,
            file,
            Some(&node),
            format!(
                "the {element} must be {} identified under root {oid}",
                match kind {
                    CounterpartKind::Clinic => "an institution",
                    CounterpartKind::Insurer => "an insurer",
                }
            ),
        ));
        return None;
    }
    let number = node.get_attribute("extension")?;
    if let Err(e) = numbers::check(kind.number_kind(), &number) {
        let rule = match e {
            NumberError::CheckDigit { .. } => "number.check-digit",
            NumberError::Shape { .. } => "number.malformed",
        };
        findings.push(at(rule, file, Some(&node), format!("the {element}: {e}")));
        return None;
    }
    if let Some(r) = extra(&number, &node) {
        findings.push(r);
        return None;
    }
    Some(number)
}

/// Checks `summary.xml` against the header and the records present.
pub fn check_summary(doc: &Document, header: &Header, records: u64, findings: &mut Vec<Reason>) {
    use format::summary as el;
    let file = format::SUMMARY;
    let Some(root) = doc.get_root_element() else {
        return;
    };
    if let Some(node) = descend(&root, &[el::SERVICE_EVENT_TYPE]) {
        let code = node.get_attribute("code");
        if header.service_event.is_some() && code != header.service_event {
            findings.push(at(
                "summary.mismatch",
                file,
                Some(&node),
                format!(
                    "the service event type {} differs from {} in index.xml",
                    code.unwrap_or_default(),
                    header.service_event.clone().unwrap_or_default()
                ),
            ));
        }
    }
    if let Some(node) = descend(&root, &[el::TOTAL_RECORD_COUNT]) {
        let count = node
            .get_attribute("value")
            .and_then(|v| v.parse::<u64>().ok());
        if count != Some(records) {
            findings.push(at(
                "summary.count-mismatch",
                file,
                Some(&node),
                format!(
                    "the total record count is {}, but the archive holds {records} record files",
                    count.map_or("unreadable".into(), |c| c.to_string())
                ),
            ));
        }
    }
}

/// Checks the count of `index.xml` against the records present.
pub fn check_index_count(
    doc: &Document,
    header: &Header,
    records: u64,
    findings: &mut Vec<Reason>,
) {
    if header.record_count == Some(records) {
        return;
    }
    let node = doc
        .get_root_element()
        .and_then(|r| descend(&r, &[format::index::TOTAL_RECORD_COUNT]));
    findings.push(at(
        "index.count-mismatch",
        format::INDEX,
        node.as_ref(),
        format!(
            "the total record count is {}, but the archive holds {records} record files under {}",
            header
                .record_count
                .map_or("unreadable".into(), |c| c.to_string()),
            format::DATA_DIR
        ),
    ));
}

/// A record file name, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordName {
    pub kind: RecordKind,
    pub number: String,
    pub date: String,
    pub serial: String,
}

/// Reads a record file name: kind letter, sender number (10 or 8 digits), YYYYMMDD, serial,
/// `.xml`.
pub fn parse_record_name(base: &str) -> Option<RecordName> {
    let stem = base.strip_suffix(".xml")?;
    let mut chars = stem.chars();
    let kind = RecordKind::from_prefix(chars.next()?)?;
    let digits = chars.as_str();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let tail = format::NAME_DATE_DIGITS + format::NAME_SERIAL_DIGITS;
    let number_len = digits.len().checked_sub(tail)?;
    if number_len != NumberKind::Institution.digits() && number_len != NumberKind::Insurer.digits()
    {
        return None;
    }
    let (number, rest) = digits.split_at(number_len);
    let (date, serial) = rest.split_at(format::NAME_DATE_DIGITS);
    Some(RecordName {
        kind,
        number: number.into(),
        date: date.into(),
        serial: serial.into(),
    })
}

/// Checks a record's file name against the header; returns its kind when the name is valid.
pub fn check_record_name(
    path: &str,
    expected: &[RecordKind],
    header: &Header,
    today: Date,
    findings: &mut Vec<Reason>,
) -> Option<RecordKind> {
    let base = path.rsplit('/').next().unwrap_or(path);
    let prefixes: String = expected.iter().map(|k| k.prefix()).collect();
    let Some(name) = parse_record_name(base).filter(|n| expected.contains(&n.kind)) else {
        findings.push(
            Reason::new(
                "name.pattern",
                format!(
                    "the name must be one of the letters [{prefixes}], the sender number, the \
                 creation date YYYYMMDD and a {}-digit serial, ending in .xml",
                    format::NAME_SERIAL_DIGITS
                ),
            )
            .in_file(path),
        );
        return None;
    };
    if let Some(sender) = &header.sender_number
        && name.number != *sender
    {
        findings.push(
            Reason::new(
                "name.sender",
                format!(
                    "the name carries number {}, but the sender in index.xml is {sender}",
                    name.number
                ),
            )
            .in_file(path),
        );
    }
    check_date(path, None, &name.date, today, findings);
    if let (Some(code), Some(event)) = (name.kind.service_event_code(), &header.service_event)
        && code != event
    {
        findings.push(
            Reason::new(
                "data.kind",
                format!(
                    "a {} record in an archive whose service event type is {event}",
                    record_kind_name(name.kind)
                ),
            )
            .in_file(path),
        );
    }
    Some(name.kind)
}

/// Checks the dates and the author of one CDA record.
pub fn check_record(
    path: &str,
    doc: &Document,
    header: &Header,
    today: Date,
    findings: &mut Vec<Reason>,
) {
    let Some(root) = doc.get_root_element() else {
        return;
    };
    for date_path in format::CDA_DATES {
        let (attr, elements) = date_path.split_last().expect("paths are not empty");
        let attr = attr.trim_start_matches('@');
        if let Some(node) = descend(&root, elements)
            && let Some(value) = node.get_attribute(attr)
        {
            check_date(path, Some(&node), &value, today, findings);
        }
    }
    if let (Some(sender), Some(node)) =
        (&header.sender_number, descend(&root, format::CDA_AUTHOR_ID))
        && let Some(ext) = node.get_attribute("extension")
        && ext != *sender
    {
        findings.push(at(
            "data.sender-mismatch",
            path,
            Some(&node),
            format!("the author is {ext}, but the sender in index.xml is {sender}"),
        ));
    }
}

/// A date value (YYYYMMDD, optionally followed by a time) must be a real date, not in the
/// future.
fn check_date(
    file: &str,
    node: Option<&Node>,
    value: &str,
    today: Date,
    findings: &mut Vec<Reason>,
) {
    match parse_date(value) {
        None => findings.push(at(
            "date.invalid",
            file,
            node,
            format!("{value:?} is not a real date (YYYYMMDD)"),
        )),
        Some(d) if d > today => findings.push(at(
            "date.future",
            file,
            node,
            format!("the date {value} is in the future"),
        )),
        Some(_) => {}
    }
}

/// The calendar date at the start of an HL7 TS value.
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

/// The kind with its article, for messages.
fn kind_name(kind: CounterpartKind) -> &'static str {
    match kind {
        CounterpartKind::Clinic => "a clinic",
        CounterpartKind::Insurer => "an insurer",
    }
}

fn record_kind_name(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Checkup => "checkup",
        RecordKind::Guidance => "guidance",
        RecordKind::Claims => "claims",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_split_into_parts() {
        let n = parse_record_name("h1312345679202611200000001.xml").unwrap();
        assert_eq!(n.kind, RecordKind::Checkup);
        assert_eq!(n.number, "1312345679");
        assert_eq!(n.date, "20261120");
        assert_eq!(n.serial, "0000001");
        assert!(parse_record_name("g06130017202611200000001.xml").is_some());
        for bad in [
            "x1312345679202611200000001.xml",
            "h131234567920261120000001.xml",
            "h1312345679202611200000001.XML",
            "h13123456792026112000000a1.xml",
            "h.xml",
        ] {
            assert_eq!(parse_record_name(bad), None, "{bad}");
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
