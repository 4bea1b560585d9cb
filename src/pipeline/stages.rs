//! The stages a job passes after accept, each a [`Stage`]: it takes jobs in one state and says
//! what comes next. The runner commits that before acting on it, so a stage may run again after
//! a crash and must be idempotent (its outputs have deterministic names and are replaced whole).

use std::io::{self, Read, Seek, Write};
use std::sync::Arc;

use crate::accounts::CounterpartId;
use crate::boxes::{self, BoxStore};
use crate::config::{Config, Counterpart, Inbound, Media};
use crate::error::Chain;
use crate::events::{Channel, Finding, PipelineRule};
use crate::numbers::Number;
use crate::pipeline::jobs::{Job, JobState, JobStore};
use crate::scan::{ClamdPool, Verdict};
use crate::seal::{OpenOptions, OpeningKey, SealError};
pub use crate::spool::ReadSeek;
use crate::spool::Spool;
use crate::validate;

/// What a stage may touch.
pub struct StageCtx<'a> {
    pub spool: &'a Spool,
    /// For stages that record more than their own job's transition (the split plan).
    pub store: &'a dyn JobStore,
    pub config: &'a Config,
    pub boxes: &'a dyn BoxStore,
}

/// What a stage decided.
#[derive(Debug)]
pub enum Outcome {
    /// Move the job on to `to`, recording what the stage learnt.
    Advance {
        to: JobState,
        recipient: Option<CounterpartId>,
        sealed_sha256: Option<crate::ids::Sha256>,
        /// Findings the file goes on with, for the `delivered` receipt.
        warnings: Vec<Finding>,
    },
    /// Refuse the file; `quarantine` when clamd found something.
    Reject {
        reasons: Vec<Finding>,
        quarantine: bool,
    },
    /// An agency-addressed archive was sorted: the child jobs to record (their files are in
    /// the spool), as the parent's `split` receipt lists them, and the persons returned to the
    /// sender (a `rejected` receipt for the parent, when not empty).
    Split {
        children: Vec<Job>,
        listed: Vec<crate::events::Child>,
        returned: Vec<Finding>,
    },
    /// Not now (scanner unreachable, disk error): the job stays where it is and is retried.
    Retry(String),
    /// An internal error: this file cannot pass this stage, and waiting will not help (a bug, an
    /// inconsistent job). Retried a few times, then the file is rejected with `internal.error`.
    Failed(String),
}

impl Outcome {
    /// On to `to`, nothing learnt.
    pub fn advance(to: JobState) -> Outcome {
        Outcome::Advance {
            to,
            recipient: None,
            sealed_sha256: None,
            warnings: Vec::new(),
        }
    }
}

/// One step of the pipeline.
pub trait Stage: Send + Sync {
    fn name(&self) -> &'static str;
    /// The state of the jobs this stage takes.
    fn takes(&self) -> JobState;
    /// Whether the stage handles this job of its state (several stages may take one state).
    fn applies(&self, _job: &Job) -> bool {
        true
    }
    fn run(&self, job: &Job, ctx: &StageCtx<'_>) -> Outcome;
}

/// Facts the validator read from the archive that routing needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    /// The receiver in the archive's index (a counterpart's number, its kind with it), if the
    /// validator read one.
    pub receiver: Option<Number>,
    /// The index names the gateway's agency: the archive is sorted by insurer.
    pub agency: bool,
}

/// What the validator concluded about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validated {
    /// Routed by the archive's facts, with the findings it goes on with.
    Routed(Routing, Vec<Finding>),
    Rejected(Vec<Finding>),
}

/// Checks a file that `sender` uploaded as `name` under the configuration in force. `Err`
/// when the check cannot run now (its schema set is unusable): the job waits, nothing is
/// guessed.
pub trait Validator: Send + Sync {
    fn validate(
        &self,
        src: &mut dyn ReadSeek,
        name: &str,
        sender: &Counterpart,
        config: &Config,
    ) -> Result<Validated, String>;
}

/// The checkup archive check of [`crate::validate`], with the schema set, archive limits and
/// rule settings of the configuration in force.
#[derive(Debug, Default)]
pub struct ArchiveValidator;

impl Validator for ArchiveValidator {
    fn validate(
        &self,
        src: &mut dyn ReadSeek,
        name: &str,
        sender: &Counterpart,
        config: &Config,
    ) -> Result<Validated, String> {
        match validate::check_upload(src, name, sender, config) {
            Ok(validate::Checked::Valid { header, warnings }) => {
                let agency = matches!(header.receiver, Some((validate::format::Party::Agency, _)));
                let receiver = header
                    .receiver
                    .and_then(|(party, number)| validate::rules::kind_of(party).map(|_| number));
                Ok(Validated::Routed(Routing { receiver, agency }, warnings))
            }
            Ok(validate::Checked::Invalid(findings)) => Ok(Validated::Rejected(findings)),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Seals a file of `len` plaintext bytes for its recipient.
pub trait Sealer: Send + Sync {
    fn seal(
        &self,
        src: &mut dyn Read,
        len: u64,
        recipient: &Counterpart,
        out: &mut dyn Write,
    ) -> io::Result<()>;
}

/// CMS AuthEnvelopedData (AES-256-GCM) for the recipient's `encryption_cert`
/// ([`crate::seal::cms`]), which the recipient opens with `openssl cms -decrypt`.
#[derive(Debug, Default)]
pub struct CmsSealer;

impl Sealer for CmsSealer {
    fn seal(
        &self,
        src: &mut dyn Read,
        len: u64,
        recipient: &Counterpart,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let cert = recipient
            .encryption_cert
            .as_ref()
            .ok_or_else(|| io::Error::other(format!("{} has no encryption_cert", recipient.id)))?;
        let to = crate::seal::Recipient::from_file(cert).map_err(io::Error::other)?;
        crate::seal::seal_for(&[to], len, src, out)
            .map(drop)
            .map_err(io::Error::other)
    }
}

/// The recipient of a file from `sender`: the counterpart with the receiver number the
/// validator read (of the other kind), or without one the sender's only route. The pair must
/// be an allowed route; nothing is guessed.
pub fn route(config: &Config, sender: &str, routing: &Routing) -> Result<CounterpartId, Finding> {
    let Some(from) = config.counterpart(sender) else {
        return Err(Finding::new(
            PipelineRule::RouteUnknownSender,
            format!("{sender} is not a configured counterpart"),
        ));
    };
    if routing.agency {
        return if config.may_send_to_agency(sender) {
            Ok(crate::config::agency_route())
        } else {
            Err(Finding::new(
                PipelineRule::RouteNotAllowed,
                format!("{sender} may not send archives to the agency"),
            ))
        };
    }
    let to = match &routing.receiver {
        Some(number) => match config.counterpart_by_number(number) {
            Some(c) => c.id.clone(),
            None => {
                return Err(Finding::new(
                    PipelineRule::RouteUnknownRecipient,
                    format!("receiver number {number} is not a known counterpart"),
                ));
            }
        },
        None => match from.routes.as_slice() {
            [only] => only.clone(),
            _ => {
                return Err(Finding::new(
                    PipelineRule::RouteUnknownRecipient,
                    "the file names no receiver and the sender has no single route",
                ));
            }
        },
    };
    if !config.route_allowed(sender, &to) || config.counterpart(&to).is_none() {
        return Err(Finding::new(
            PipelineRule::RouteNotAllowed,
            format!("{sender} may not send files to {to}"),
        ));
    }
    Ok(to)
}

/// Validates and routes.
pub struct ValidateStage {
    pub validator: Arc<dyn Validator>,
}

impl Stage for ValidateStage {
    fn name(&self) -> &'static str {
        "validate"
    }
    fn takes(&self) -> JobState {
        JobState::Accepted
    }
    fn run(&self, job: &Job, ctx: &StageCtx<'_>) -> Outcome {
        let Some(sender) = ctx.config.counterpart(&job.sender) else {
            return Outcome::Reject {
                reasons: vec![Finding::new(
                    PipelineRule::RouteUnknownSender,
                    format!("{} is not a configured counterpart", job.sender),
                )],
                quarantine: false,
            };
        };
        let opened = match ctx.spool.has_opened(&job.file_id) {
            Ok(opened) => opened,
            Err(e) => return Outcome::Retry(format!("spool: {e}")),
        };
        if !opened {
            let sealed = match sealed_for_gateway(job, sender, ctx) {
                Ok(sealed) => sealed,
                Err(stop) => return stop,
            };
            if let Some(form) = sealed
                && let Some(stop) = open_inbound(job, ctx, form)
            {
                return stop;
            }
        }
        let mut file = match ctx.spool.open(&job.file_id) {
            Ok(f) => f,
            Err(e) => return Outcome::Retry(format!("opening spool file: {e}")),
        };
        let (routing, warnings) =
            match self
                .validator
                .validate(&mut file, &job.original_name, sender, ctx.config)
            {
                Ok(Validated::Routed(r, warnings)) => (r, warnings),
                Ok(Validated::Rejected(reasons)) => {
                    return Outcome::Reject {
                        reasons,
                        quarantine: false,
                    };
                }
                Err(e) => return Outcome::Retry(format!("the schema check cannot run: {e}")),
            };
        match route(ctx.config, &job.sender, &routing) {
            Ok(to) => Outcome::Advance {
                to: JobState::Validated,
                recipient: Some(to),
                sealed_sha256: None,
                warnings,
            },
            Err(reason) => Outcome::Reject {
                reasons: vec![reason],
                quarantine: false,
            },
        }
    }
}

/// Why a file is to be opened as CMS for the gateway before the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SealedBy {
    /// The counterpart's uploads must be (`inbound = "cms"`).
    Uploads,
    /// The counterpart's media must be (`media = "cms"`).
    MediaRule,
    /// A file from a medium that is CMS, for a counterpart whose media may be plain.
    Medium,
}

/// Whether, and why, the file is to be opened as CMS for the gateway. An upload follows its
/// counterpart's `inbound`; a file an operator ingested from a medium follows its `media`,
/// and where that allows plain archives, what the file is. `Err` when that cannot be read now.
fn sealed_for_gateway(
    job: &Job,
    sender: &Counterpart,
    ctx: &StageCtx<'_>,
) -> Result<Option<SealedBy>, Outcome> {
    if job.channel != Some(Channel::Offline) {
        return Ok((sender.inbound == Inbound::Cms).then_some(SealedBy::Uploads));
    }
    if sender.media == Media::Cms {
        return Ok(Some(SealedBy::MediaRule));
    }
    let retry = |e: io::Error| Outcome::Retry(format!("reading the spool file: {e}"));
    let mut upload = ctx.spool.open_upload(&job.file_id).map_err(retry)?;
    let mut prefix = Vec::with_capacity(crate::seal::open::SNIFF_LEN);
    upload
        .by_ref()
        .take(crate::seal::open::SNIFF_LEN as u64)
        .read_to_end(&mut prefix)
        .map_err(retry)?;
    Ok(crate::seal::looks_like_cms(&prefix).then_some(SealedBy::Medium))
}

/// Opens an upload that came encrypted for the gateway into the spool, where the later stages
/// read it. `Some` when the job cannot go on now: refused, or to be retried.
fn open_inbound(job: &Job, ctx: &StageCtx<'_>, form: SealedBy) -> Option<Outcome> {
    let gateway = &ctx.config.gateway;
    let Some(key_path) = &gateway.inbound_key else {
        return Some(Outcome::Retry(
            "gateway.inbound_key is not configured".into(),
        ));
    };
    let key = match OpeningKey::from_files(key_path, gateway.inbound_cert.as_deref()) {
        Ok(k) => k,
        Err(e) => {
            return Some(Outcome::Retry(format!(
                "the gateway's inbound key: {}",
                Chain(&e)
            )));
        }
    };
    let upload = match ctx.spool.open_upload(&job.file_id) {
        Ok(f) => f,
        Err(e) => return Some(Outcome::Retry(format!("opening spool file: {e}"))),
    };
    let opened = ctx.spool.store_opened(&job.file_id, |out| {
        let options = OpenOptions {
            allow_rsa_pkcs1v15: gateway.inbound_allow_rsa_pkcs1v15,
            ..OpenOptions::default()
        };
        crate::seal::open_verified(&key, options, upload, out).map(drop)
    });
    let (rule, message) = match opened {
        Ok(Ok(())) => return None,
        Err(e) => return Some(Outcome::Retry(format!("storing the opened file: {e}"))),
        Ok(Err(SealError::Io(e))) => return Some(Outcome::Retry(format!("opening: {e}"))),
        Ok(Err(e @ SealError::Malformed(_))) => (
            "inbound.not-cms",
            match form {
                SealedBy::Uploads => format!(
                    "this account's uploads must be CMS encrypted for the gateway: {}",
                    Chain(&e)
                ),
                SealedBy::MediaRule => format!(
                    "files from media for this counterpart must be CMS encrypted for the \
                     gateway (media = \"cms\"): {}",
                    Chain(&e)
                ),
                SealedBy::Medium => format!("the file is damaged CMS: {}", Chain(&e)),
            },
        ),
        Ok(Err(e @ (SealError::WrongKey | SealError::CertificateMismatch))) => (
            "inbound.wrong-recipient",
            format!(
                "the upload is not encrypted for the gateway's certificate: {}",
                Chain(&e)
            ),
        ),
        Ok(Err(e @ (SealError::Tampered | SealError::Truncated))) => (
            "inbound.damaged",
            format!("the upload does not decrypt: {}", Chain(&e)),
        ),
        Ok(Err(e @ SealError::Unsupported(_))) => ("inbound.unsupported", Chain(&e).to_string()),
    };
    Some(Outcome::Reject {
        reasons: vec![Finding::new(rule, message)],
        quarantine: false,
    })
}

/// Streams the file through a clamd of the pool. Fail closed: errors retry, findings reject;
/// a file waits only when no endpoint could give a verdict ([`ClamdPool::scan`]).
pub struct ScanStage {
    pub clamd: Arc<ClamdPool>,
}

impl Stage for ScanStage {
    fn name(&self) -> &'static str {
        "scan"
    }
    fn takes(&self) -> JobState {
        JobState::Validated
    }
    fn run(&self, job: &Job, ctx: &StageCtx<'_>) -> Outcome {
        let mut file = match ctx.spool.open(&job.file_id) {
            Ok(f) => f,
            Err(e) => return Outcome::Retry(format!("opening spool file: {e}")),
        };
        match self.clamd.scan(&mut file) {
            Ok(Verdict::Clean) => Outcome::advance(JobState::Scanned),
            Ok(Verdict::Found(name)) if name.starts_with("Heuristics.Limits.Exceeded") => {
                Outcome::Reject {
                    reasons: vec![Finding::new(
                        PipelineRule::ScanLimitsExceeded,
                        format!("the file is too large or too deeply nested to scan ({name})"),
                    )],
                    quarantine: true,
                }
            }
            Ok(Verdict::Found(name)) => Outcome::Reject {
                reasons: vec![Finding::new(
                    PipelineRule::ScanInfected,
                    format!("the virus scanner found {name}"),
                )],
                quarantine: true,
            },
            Err(e) => Outcome::Retry(Chain(&e).to_string()),
        }
    }
}

/// Seals the file for its recipient into the spool.
pub struct SealStage {
    pub sealer: Arc<dyn Sealer>,
}

impl Stage for SealStage {
    fn name(&self) -> &'static str {
        "seal"
    }
    fn takes(&self) -> JobState {
        JobState::Scanned
    }
    fn applies(&self, job: &Job) -> bool {
        job.recipient.as_deref() != Some(crate::config::AGENCY_ROUTE)
    }
    fn run(&self, job: &Job, ctx: &StageCtx<'_>) -> Outcome {
        let Some(recipient) = job
            .recipient
            .as_deref()
            .and_then(|r| ctx.config.counterpart(r))
        else {
            return Outcome::Reject {
                reasons: vec![Finding::new(
                    PipelineRule::RouteUnknownRecipient,
                    "the recipient is no longer configured",
                )],
                quarantine: false,
            };
        };
        // A certificate that cannot be sealed to will not become usable by waiting: refuse now.
        let usable = match &recipient.encryption_cert {
            None => Err(format!("{} has no encryption certificate", recipient.id)),
            Some(cert) => crate::seal::Recipient::from_file(cert)
                .map(drop)
                .map_err(|e| format!("{}: {}", cert.display(), Chain(&e))),
        };
        if let Err(why) = usable {
            return Outcome::Reject {
                reasons: vec![Finding::new(
                    PipelineRule::SealRecipientCertificate,
                    format!("cannot seal for {}: {why}", recipient.id),
                )],
                quarantine: false,
            };
        }
        let mut src = match ctx.spool.open(&job.file_id) {
            Ok(f) => f,
            Err(e) => return Outcome::Retry(format!("opening spool file: {e}")),
        };
        // The content's length: the upload's, or that of what was opened from it.
        let len = match src
            .seek(io::SeekFrom::End(0))
            .and_then(|n| src.rewind().map(|()| n))
        {
            Ok(n) => n,
            Err(e) => return Outcome::Retry(format!("reading spool file: {e}")),
        };
        match ctx.spool.store_sealed(&job.file_id, |out| {
            self.sealer.seal(&mut src, len, recipient, out)
        }) {
            Ok(w) => Outcome::Advance {
                to: JobState::Sealed,
                recipient: None,
                sealed_sha256: Some(w.sha256),
                warnings: Vec::new(),
            },
            Err(e) => Outcome::Retry(format!("sealing: {e}")),
        }
    }
}

/// Writes the sealed file into the recipient's outbox: a temporary file in the spool (same
/// file system), fsync, rename into the outbox, fsync the outbox.
pub struct DeliverStage;

impl Stage for DeliverStage {
    fn name(&self) -> &'static str {
        "deliver"
    }
    fn takes(&self) -> JobState {
        JobState::Sealed
    }
    fn run(&self, job: &Job, ctx: &StageCtx<'_>) -> Outcome {
        let Some(recipient) = job.recipient.as_ref() else {
            return Outcome::Failed("sealed job without recipient".into());
        };
        let name = boxes::outbox_name(&job.file_id, &job.original_name);
        let tmp = ctx.spool.tmp_path(&job.file_id, "deliver");
        let result = ctx
            .spool
            .sealed(&job.file_id)
            .and_then(|sealed| ctx.boxes.deliver(recipient, &name, &sealed, &tmp));
        match result {
            Ok(sha) => Outcome::Advance {
                to: JobState::Delivered,
                recipient: None,
                sealed_sha256: Some(sha),
                warnings: Vec::new(),
            },
            Err(e) => Outcome::Retry(format!("delivering to {recipient}: {e}")),
        }
    }
}
