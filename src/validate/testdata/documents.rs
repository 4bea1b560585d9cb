//! The XML files an archive holds (the index, the summary, the CDA documents and the claims),
//! each written line by line from its fields so that a violation can change one field and say
//! on which line the change is.

use time::Date;

use super::persons::{Person, institution_name};
use super::{Edition, Rng, Spec};
use crate::validate::format::{self, DocKind, date_digits, oid};

const XML_DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

// ---------------------------------------------------------------------------------------
// The index and the summary.

/// The content of `ix08_V08.xml`, field by field, so that a violation can change one.
pub(super) struct IndexFields {
    pub(super) ns: &'static str,
    pub(super) interaction: u8,
    pub(super) created: String,
    pub(super) sender_root: &'static str,
    pub(super) sender: String,
    pub(super) receiver_root: &'static str,
    pub(super) receiver: String,
    pub(super) service: u8,
    pub(super) count: usize,
}

pub(super) fn index_xml(f: &IndexFields) -> String {
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
pub(super) struct Amounts {
    cost: u64,
    payment: u64,
    other: Option<u64>,
    claim: u64,
}

pub(super) struct SummaryFields {
    ns: &'static str,
    pub(super) service: u8,
    pub(super) subjects: usize,
    cost: u64,
    payment: u64,
    other: Option<u64>,
    pub(super) claim: u64,
}

impl SummaryFields {
    pub(super) fn new(ns: &'static str, service: u8, claims: &[Amounts]) -> SummaryFields {
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

pub(super) fn summary_xml(f: &SummaryFields) -> String {
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
pub(super) struct CdaTweak {
    pub(super) encoding: Option<&'static str>,
    pub(super) doctype: Option<&'static str>,
    pub(super) malformed: bool,
    pub(super) unknown_element: bool,
    pub(super) effective: Option<String>,
    pub(super) author_org: Option<String>,
    pub(super) padding_lines: usize,
}

pub(super) fn cda_xml(
    spec: &Spec,
    kind: DocKind,
    p: &Person,
    rng: &mut Rng,
    t: &CdaTweak,
) -> String {
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

/// Whether the insurance card's 枝番 exists in the claims of `edition` (not in the 2007 set).
fn has_branch_code(edition: Edition) -> bool {
    edition != Edition::V2007
}

/// Changes a violation makes to one claim.
#[derive(Default)]
pub(super) struct ClaimTweak {
    pub(super) namespace: Option<&'static str>,
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

pub(super) fn claim_xml(
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

#[cfg(test)]
mod tests {
    use super::*;

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
