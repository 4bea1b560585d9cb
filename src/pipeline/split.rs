//! The split stage: an archive addressed to the agency, once validated and scanned, is sorted
//! into one archive per insurer (docs/sorting.md). The children are new jobs that
//! go on to seal and deliver; the parent ends with a `split` receipt listing them.
//!
//! Crash safety: the children's file ids and send counts are planned (committed) first; the
//! child files are then written under those ids (deterministic bytes, replaced whole on a
//! rerun); the child jobs and the parent's `split` event are committed in one transaction. A
//! crash before that commit leaves child files without jobs, which start-up sweeps, and the
//! split runs again with the same plan; after it, the parent is finished. So no child is ever
//! made twice and no person is in two children.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::stages::{Outcome, Stage, StageCtx};
use crate::config::{AGENCY_ROUTE, Config, Counterpart, CounterpartKind, Unroutable};
use crate::error::Chain;
use crate::events::{Child, Finding, PipelineRule};
use crate::numbers::{AgencyNumber, InsurerNumber, Number};
use crate::pipeline::jobs::{Job, JobState};
use crate::sorting::{self, ChildSpec, Person};
use crate::validate::archive::Limits;
use crate::validate::format;
use crate::validate::{self, Checked};

/// Rule of a person whose insurer this sender may not send to through the agency.
pub const RULE_UNROUTABLE: PipelineRule = PipelineRule::SplitUnroutableInsurer;
/// Rule of a claim without its person's DATA file.
pub const RULE_UNPAIRED: PipelineRule = PipelineRule::SplitUnpairedClaim;
/// Rule of an archive with an insurer to whom the agency has sent ten archives today.
pub const RULE_SEND_COUNT: PipelineRule = PipelineRule::SplitSendCount;

/// Sorts agency-addressed archives; takes scanned jobs whose recipient is the agency.
pub struct SplitStage;

/// The account the children are checked as: the agency itself, with the record-name rules off,
/// since the records keep the names the institution gave them (its number, date and send
/// count, serials with gaps where other insurers' persons were).
fn agency_sender(agency: &AgencyNumber, language: crate::config::Lang) -> Counterpart {
    let mut rules = crate::config::RuleSettings::new();
    use crate::validate::finding::Rule;
    for rule in [Rule::NameSender, Rule::NameMismatch, Rule::NameSerial] {
        rules.insert(rule.id().to_owned(), crate::config::RuleSeverity::Off);
    }
    Counterpart {
        id: crate::config::agency_route(),
        kind: CounterpartKind::Insurer,
        number: Number::Agency(agency.clone()),
        name: None,
        ssh_keys: Vec::new(),
        password_hash: None,
        cert_subject: None,
        cert_fingerprint: None,
        encryption_cert: None,
        routes: Vec::new(),
        max_upload_size: None,
        inbound: Default::default(),
        media: Default::default(),
        language,
        rules,
    }
}

/// The insurer counterpart a person of `sender` may be sent to, if any.
fn routable<'c>(
    config: &'c Config,
    sender: &str,
    insurer: Option<&InsurerNumber>,
) -> Option<&'c Counterpart> {
    let c = config.counterpart_by_number(&Number::Insurer(insurer?.clone()))?;
    (config.route_allowed(sender, &c.id) && c.encryption_cert.is_some()).then_some(c)
}

fn unroutable_reason(p: &Person, ja: bool) -> Finding {
    let who = p.insurer.as_deref().unwrap_or("-");
    let message = if ja {
        format!(
            "受診者の保険者 {who} は、この送信者が代行機関経由で送付できる保険者ではありません / \
             the person's insurer {who} is not an insurer this sender may send to through the agency"
        )
    } else {
        format!(
            "the person's insurer {who} is not an insurer this sender may send to through the agency / \
             受診者の保険者 {who} は、この送信者が代行機関経由で送付できる保険者ではありません"
        )
    };
    Finding::new(RULE_UNROUTABLE, message).in_file(&p.data)
}

impl Stage for SplitStage {
    fn name(&self) -> &'static str {
        "split"
    }
    fn takes(&self) -> JobState {
        JobState::Scanned
    }
    fn applies(&self, job: &Job) -> bool {
        job.recipient.as_deref() == Some(AGENCY_ROUTE)
    }
    fn run(&self, job: &Job, ctx: &StageCtx<'_>) -> Outcome {
        let config = ctx.config;
        let Some(agency) = config.gateway.agency_number.as_ref() else {
            return Outcome::Reject {
                reasons: vec![Finding::new(
                    PipelineRule::RouteUnknownRecipient,
                    "この代行機関は設定されていません / the gateway is no longer configured as an agency",
                )],
                quarantine: false,
            };
        };
        let language = config
            .counterpart(&job.sender)
            .map(|c| c.language)
            .unwrap_or_default();
        let ja = language == crate::config::Lang::Ja;
        let limits = Limits::from(&config.gateway.archive);
        let survey = match ctx.spool.open(&job.file_id) {
            Ok(f) => match sorting::survey(f, limits) {
                Ok(s) => s,
                Err(e) => return Outcome::Failed(Chain(&e).to_string()),
            },
            Err(e) => return Outcome::Retry(format!("opening spool file: {e}")),
        };

        // Every DATA file ends in exactly one child or in the list of files returned.
        let mut returned: Vec<Finding> = Vec::new();
        let mut groups: BTreeMap<InsurerNumber, (&Counterpart, Vec<&Person>)> = BTreeMap::new();
        for p in &survey.persons {
            // A person whose insurer is no valid number cannot be routed.
            let insurer = p
                .insurer
                .as_deref()
                .and_then(|n| InsurerNumber::parse(n).ok());
            match insurer.and_then(|n| Some((routable(config, &job.sender, Some(&n))?, n))) {
                Some((c, n)) => groups.entry(n).or_insert_with(|| (c, Vec::new())).1.push(p),
                None => returned.push(unroutable_reason(p, ja)),
            }
        }
        for claim in &survey.orphan_claims {
            returned.push(
                Finding::new(
                    RULE_UNPAIRED,
                    if ja {
                        "対応する DATA のファイルがないため、振り分けできません / the claim has no DATA file to be sorted with"
                    } else {
                        "the claim has no DATA file to be sorted with / 対応する DATA のファイルがないため、振り分けできません"
                    },
                )
                .in_file(claim),
            );
        }
        if !returned.is_empty()
            && (config.gateway.sorting.unroutable == Unroutable::RejectArchive || groups.is_empty())
        {
            return Outcome::Reject {
                reasons: returned,
                quarantine: false,
            };
        }

        let day = format::date_digits(validate::today(config.gateway.utc_offset()));
        let insurers: Vec<&str> = groups.keys().map(InsurerNumber::as_str).collect();
        let plan = match ctx.store.plan_split(&job.file_id, &day, &insurers) {
            Ok(Ok(plan)) => plan,
            Ok(Err(insurer)) => {
                return Outcome::Reject {
                    reasons: vec![Finding::new(
                        RULE_SEND_COUNT,
                        format!(
                            "代行機関から保険者 {insurer} への本日の送付は上限の10回に達しました。明日再送してください / \
                             the agency has sent the most archives a day allows (10) to insurer {insurer} today; send again tomorrow"
                        ),
                    )],
                    quarantine: false,
                };
            }
            Err(e) => return Outcome::Retry(format!("planning the split: {}", Chain(&e))),
        };

        let agency_account = agency_sender(agency, language);
        let mut children = Vec::new();
        let mut listed = Vec::new();
        for planned in &plan {
            let Some((number, (insurer, persons))) = groups.get_key_value(planned.insurer.as_str())
            else {
                return Outcome::Failed(format!(
                    "the split plan names insurer {} that the archive no longer holds",
                    planned.insurer
                ));
            };
            let spec = ChildSpec {
                agency,
                insurer: number,
                date: &planned.day,
                send_count: planned.n,
                persons,
            };
            let name = spec.name(&survey).file_name();
            let written = match ctx.spool.open(&job.file_id).and_then(|src| {
                ctx.spool.store_with(&planned.file_id, |out| {
                    sorting::write_child(
                        src,
                        limits,
                        &config.gateway.schema_dir,
                        &survey,
                        &spec,
                        out,
                    )
                    .map(drop)
                    .map_err(std::io::Error::other)
                })
            }) {
                Ok(w) => w,
                Err(e) => {
                    return Outcome::Retry(format!("writing a sorted archive: {}", Chain(&e)));
                }
            };
            // The gateway checks its own output as it checks an upload.
            let checked = ctx
                .spool
                .open(&planned.file_id)
                .map(|f| validate::check_upload(f, &name, &agency_account, config));
            let warnings = match checked {
                Ok(Ok(Checked::Valid { warnings, .. })) => warnings,
                Ok(Ok(Checked::Invalid(reasons))) => {
                    let first = reasons.first().map(ToString::to_string).unwrap_or_default();
                    return Outcome::Failed(format!(
                        "sorted archive {name} fails the check: {first}"
                    ));
                }
                Ok(Err(e)) => return Outcome::Retry(format!("the schema check cannot run: {e}")),
                Err(e) => return Outcome::Retry(format!("opening a sorted archive: {e}")),
            };
            listed.push(Child {
                file_id: planned.file_id.clone(),
                recipient: insurer.id.clone(),
                insurer: number.to_string(),
                original_name: name.clone(),
                persons: persons.len() as u64,
                size: written.size,
                sha256: written.sha256,
            });
            children.push(Job {
                file_id: planned.file_id.clone(),
                sender: job.sender.clone(),
                original_name: name,
                size: written.size,
                sha256: written.sha256,
                inbox_key: format!("split:{}:{}", job.file_id, insurer.number),
                state: JobState::Scanned,
                recipient: Some(insurer.id.clone()),
                sealed_sha256: None,
                accepted_at: OffsetDateTime::now_utc(),
                delivered_at: None,
                retrieved: false,
                quarantined: false,
                warnings,
                parent: Some(job.file_id.clone()),
                // The gateway made it: no account acted.
                accepted_by: None,
                channel: None,
            });
        }
        Outcome::Split {
            children,
            listed,
            returned,
        }
    }
}
