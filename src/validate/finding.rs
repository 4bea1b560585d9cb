//! What the check reports: a [`Observation`] names its [`Rule`], where in the archive it is, and
//! says what is wrong in Japanese and in English. Each rule has a default [`Severity`]; the
//! operator may change it per gateway and per counterpart, except for the rules that keep the
//! gateway safe and the data with its owner (safety, schema validity, sender identity,
//! routing), which always reject.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::events::Finding;

/// What a finding does to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Not reported.
    Off,
    /// Reported in the receipts of both parties; the file is delivered.
    Warn,
    /// The file goes back to the sender.
    Reject,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Off => "off",
            Severity::Warn => "warn",
            Severity::Reject => "reject",
        }
    }
}

/// The language a counterpart reads its receipts in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    Ja,
    En,
}

impl std::str::FromStr for Lang {
    type Err = String;
    fn from_str(s: &str) -> Result<Lang, String> {
        match s {
            "ja" => Ok(Lang::Ja),
            "en" => Ok(Lang::En),
            _ => Err(format!("unknown language {s:?}: \"ja\" or \"en\"")),
        }
    }
}

macro_rules! rules {
    ($($variant:ident = $id:literal, $default:ident, $locked:literal;)*) => {
        /// Every rule of the check, with its stable id (the same in both languages).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Rule { $($variant),* }

        impl Rule {
            pub const ALL: &[Rule] = &[$(Rule::$variant),*];

            pub fn id(self) -> &'static str {
                match self { $(Rule::$variant => $id),* }
            }

            /// The severity when the configuration says nothing.
            pub fn default_severity(self) -> Severity {
                match self { $(Rule::$variant => Severity::$default),* }
            }

            /// Whether the rule always rejects: the configuration cannot lower it.
            pub fn locked(self) -> bool {
                match self { $(Rule::$variant => $locked),* }
            }
        }
    };
}

rules! {
    ZipUnreadable = "zip.unreadable", Reject, true;
    ZipTraversal = "zip.traversal", Reject, true;
    ZipBadName = "zip.bad-name", Reject, true;
    ZipDuplicate = "zip.duplicate", Reject, true;
    ZipTooManyEntries = "zip.too-many-entries", Reject, true;
    ZipEntryTooLarge = "zip.entry-too-large", Reject, true;
    ZipTotalTooLarge = "zip.total-too-large", Reject, true;
    ZipRatio = "zip.ratio", Reject, true;
    ZipNested = "zip.nested", Reject, true;
    ZipEncrypted = "zip.encrypted", Reject, true;
    ZipMethod = "zip.method", Reject, true;
    ZipHeaderMismatch = "zip.header-mismatch", Reject, true;
    ZipCorrupt = "zip.corrupt", Reject, true;
    ArchiveName = "archive.name", Warn, false;
    ArchiveSender = "archive.sender", Reject, true;
    ArchiveNameMismatch = "archive.name-mismatch", Warn, false;
    LayoutTopFolder = "layout.top-folder", Reject, true;
    LayoutFolderName = "layout.folder-name", Warn, false;
    LayoutMissing = "layout.missing", Reject, true;
    LayoutEmpty = "layout.empty", Reject, true;
    LayoutClaimsSummary = "layout.claims-summary", Reject, false;
    LayoutUnexpected = "layout.unexpected", Reject, false;
    NamePattern = "name.pattern", Warn, false;
    NameSender = "name.sender", Warn, false;
    NameMismatch = "name.mismatch", Warn, false;
    NameSerial = "name.serial", Warn, false;
    NameUnpaired = "name.unpaired", Reject, false;
    XmlEncoding = "xml.encoding", Reject, true;
    XmlDtd = "xml.dtd", Reject, true;
    XmlMalformed = "xml.malformed", Reject, true;
    XsdInvalid = "xsd.invalid", Reject, true;
    EditionUnknown = "edition.unknown", Reject, true;
    EditionNotAccepted = "edition.not-accepted", Reject, true;
    EditionNonCurrent = "edition.non-current", Warn, false;
    IndexInteractionType = "index.interaction-type", Warn, false;
    IndexSenderNumber = "index.sender-number", Reject, true;
    IndexSenderMismatch = "index.sender-mismatch", Reject, true;
    IndexReceiverNumber = "index.receiver-number", Reject, true;
    IndexReceiverUnknown = "index.receiver-unknown", Reject, true;
    IndexCountMismatch = "index.count-mismatch", Reject, false;
    NumberMalformed = "number.malformed", Reject, false;
    NumberCheckDigit = "number.check-digit", Reject, false;
    SummaryTotals = "summary.totals", Warn, false;
    SummarySubjectCount = "summary.subject-count", Warn, false;
    ServiceEventMismatch = "service-event.mismatch", Reject, false;
    DataInsurer = "data.insurer", Reject, true;
    DataSenderMismatch = "data.sender-mismatch", Reject, false;
    DateInvalid = "date.invalid", Reject, false;
    DateFuture = "date.future", Reject, false;
    FindingsTruncated = "findings.truncated", Reject, true;
}

impl Rule {
    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL.iter().copied().find(|r| r.id() == id)
    }
}

impl From<Rule> for String {
    fn from(r: Rule) -> String {
        r.id().to_owned()
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// A message in both languages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pub ja: String,
    pub en: String,
}

impl Text {
    pub fn new(ja: impl Into<String>, en: impl Into<String>) -> Text {
        Text {
            ja: ja.into(),
            en: en.into(),
        }
    }

    pub fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::Ja => &self.ja,
            Lang::En => &self.en,
        }
    }
}

/// One thing found wrong, where it is, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub rule: Rule,
    /// Path inside the archive's top folder (or the zip entry name for zip findings).
    pub file: Option<String>,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub text: Text,
}

impl Observation {
    pub fn new(rule: Rule, text: Text) -> Observation {
        Observation {
            rule,
            file: None,
            line: None,
            column: None,
            text,
        }
    }

    pub fn in_file(mut self, file: impl Into<String>) -> Observation {
        self.file = Some(file.into());
        self
    }

    pub fn at_line(mut self, line: Option<u32>) -> Observation {
        self.line = line;
        self
    }

    /// The finding as a receipt's reason, in `lang`, with the severity it had.
    pub fn finding(&self, lang: Lang, severity: Severity) -> Finding {
        let mut r = Finding::new(self.rule.id(), self.text.get(lang));
        r.file = self.file.clone();
        r.line = self.line;
        r.column = self.column;
        if severity == Severity::Warn {
            r = r.warning();
        }
        r
    }
}

impl Observation {
    /// A finding of the layers that speak English only (the zip reader, the XML parser,
    /// libxml2's schema errors): the Japanese text says what the rule means and carries the
    /// technical detail as it is.
    pub fn from_finding(r: Finding) -> Observation {
        let rule = Rule::from_id(&r.rule).unwrap_or(Rule::ZipUnreadable);
        let ja = match rule.summary_ja() {
            Some(summary) => format!("{summary}（{}）", r.message),
            None => r.message.clone(),
        };
        Observation {
            rule,
            file: r.file,
            line: r.line,
            column: r.column,
            text: Text { ja, en: r.message },
        }
    }
}

impl Rule {
    /// What the rule means, in Japanese, for findings whose detail comes in English.
    fn summary_ja(self) -> Option<&'static str> {
        use Rule::*;
        Some(match self {
            ZipUnreadable => "zipファイルとして読めません",
            ZipTraversal => "アーカイブの外を指すファイル名は受け付けません",
            ZipBadName => "ファイル名に使えない文字があります",
            ZipDuplicate => "同じ名前のファイルが重複しています",
            ZipTooManyEntries => "アーカイブ内のファイル数が上限を超えています",
            ZipEntryTooLarge => "展開後のファイルサイズが上限を超えています",
            ZipTotalTooLarge => "展開後の合計サイズが上限を超えています",
            ZipRatio => "圧縮率が異常に高く、zip爆弾の疑いがあります",
            ZipNested => "アーカイブの中のアーカイブは受け付けません",
            ZipEncrypted => "暗号化されたzipエントリは受け付けません",
            ZipMethod => "対応していない圧縮方式です（deflateまたは無圧縮のみ）",
            ZipHeaderMismatch => "zipのヘッダが中央ディレクトリと一致しません",
            ZipCorrupt => "zipのデータが壊れています",
            XmlEncoding => "文字コードはUTF-8のみ受け付けます",
            XmlDtd => "DTD・実体宣言は受け付けません",
            XmlMalformed => "XMLとして正しくありません",
            XsdInvalid => "厚生労働省のスキーマに適合しません",
            EditionUnknown => "名前空間がどの版の様式にも該当しません",
            _ => return None,
        })
    }
}

/// Severities set in the configuration, by rule id, over the defaults.
pub type RuleSettings = BTreeMap<String, Severity>;

/// The severities in force for one sender: its own settings over the gateway's over the
/// defaults; locked rules always reject.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub gateway: &'a RuleSettings,
    pub counterpart: &'a RuleSettings,
}

impl Policy<'_> {
    pub fn severity(&self, rule: Rule) -> Severity {
        if rule.locked() {
            return Severity::Reject;
        }
        self.counterpart
            .get(rule.id())
            .or_else(|| self.gateway.get(rule.id()))
            .copied()
            .unwrap_or(rule.default_severity())
    }
}

/// Why a rule setting in the configuration cannot be used.
pub fn check_setting(id: &str, severity: Severity) -> Result<(), String> {
    let Some(rule) = Rule::from_id(id) else {
        return Err(format!(
            "unknown rule {id:?} (docs/validation.md lists every rule)"
        ));
    };
    if rule.locked() && severity != Severity::Reject {
        return Err(format!(
            "rule {id} always rejects (safety, schema validity, sender identity or routing) \
             and cannot be set to {}",
            severity.as_str()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_round_trip() {
        let mut ids: Vec<_> = Rule::ALL.iter().map(|r| r.id()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), Rule::ALL.len());
        for r in Rule::ALL {
            assert_eq!(Rule::from_id(r.id()), Some(*r));
        }
    }

    #[test]
    fn counterpart_settings_win_but_locked_rules_reject() {
        let gateway = RuleSettings::from([
            ("name.pattern".to_owned(), Severity::Reject),
            ("summary.totals".to_owned(), Severity::Off),
        ]);
        let counterpart = RuleSettings::from([("name.pattern".to_owned(), Severity::Off)]);
        let p = Policy {
            gateway: &gateway,
            counterpart: &counterpart,
        };
        assert_eq!(p.severity(Rule::NamePattern), Severity::Off);
        assert_eq!(p.severity(Rule::SummaryTotals), Severity::Off);
        assert_eq!(p.severity(Rule::EditionNonCurrent), Severity::Warn);
        assert_eq!(p.severity(Rule::DateInvalid), Severity::Reject);
        assert!(check_setting("xsd.invalid", Severity::Warn).is_err());
        assert!(check_setting("no.such-rule", Severity::Warn).is_err());
        assert!(check_setting("name.serial", Severity::Off).is_ok());
    }
}
