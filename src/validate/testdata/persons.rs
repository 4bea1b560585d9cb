//! The people the archives are about, invented from a seed: plausible enough for every rule the
//! check applies, and never anyone real.

use time::{Date, Duration};

use super::{Rng, Spec};

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
pub(super) struct Person {
    pub(super) insurer: String,
    /// 被保険者証 記号, 番号, 枝番.
    pub(super) symbol: String,
    pub(super) number: String,
    pub(super) branch: String,
    pub(super) name: String,
    /// 1 male, 2 female.
    pub(super) sex: u8,
    pub(super) birth: String,
    /// 受診券 or 利用券 number, 11 digits.
    pub(super) ticket: String,
    /// The checkup ticket of a guidance person.
    pub(super) checkup_ticket: String,
    pub(super) postal: String,
    /// The day of the checkup or of the guidance.
    pub(super) examined: Date,
}

pub(super) fn person(spec: &Spec, index: usize, rng: &mut Rng) -> Person {
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
pub(super) fn institution_name(number: &str) -> &'static str {
    const NAMES: &[&str] = &[
        "みなと健診クリニック",
        "さくら内科医院",
        "ひかり総合健診センター",
        "あおば診療所",
    ];
    let sum: usize = number.bytes().map(usize::from).sum();
    NAMES[sum % NAMES.len()]
}
