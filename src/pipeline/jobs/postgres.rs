//! The job store of gateway nodes sharing PostgreSQL (docs/cluster.md): the same tables and
//! transactions as the SQLite store, in the database `handoff migrate` prepared.
//!
//! Events are numbered under an advisory lock held to commit, so the log has no gaps and no
//! event becomes visible after a later-numbered one: the receipt issuer, reading the log in
//! order from wherever it stopped, can never step over an event.

use std::sync::{Arc, Weak};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_postgres::types::ToSql;

use super::{
    CLAIM_LEASE, Channel, Claimed, Handover, Job, JobState, JobStore, MAX_SEND_COUNT, PlannedChild,
    StoreError, Transition, from_nanos, nanos, sql, warnings_json,
};
use crate::accounts::CounterpartId;
use crate::error::Chain;
use crate::events::{EventLog, EventLogError, FileEvent, Hop};
use crate::ids::Sha256;
use crate::store::postgres::{Client, Database, Row, Transaction, locks};

/// How often the newest event is read, to learn of events other nodes committed (a retrieval
/// on one node is issued its receipt by the coordinating node).
const POLL: Duration = Duration::from_millis(500);

pub struct PgStore {
    db: Arc<Database>,
    latest: Arc<watch::Sender<u64>>,
}

impl PgStore {
    /// The job store in `db`, which must have this gateway's schema.
    pub fn open(db: Arc<Database>) -> Result<PgStore, StoreError> {
        db.check_schema()?;
        let seq = db.with(async |c: &mut Client| newest(c).await)?;
        let latest = Arc::new(watch::channel(seq).0);
        let store = PgStore { db, latest };
        store.poll_newest();
        Ok(store)
    }

    /// Follows the newest event while the store is in use (events of other nodes, too).
    fn poll_newest(&self) {
        let db = Arc::downgrade(&self.db);
        let latest: Weak<watch::Sender<u64>> = Arc::downgrade(&self.latest);
        let spawned = std::thread::Builder::new()
            .name("handoff-events".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(POLL);
                    let (Some(db), Some(latest)) = (db.upgrade(), latest.upgrade()) else {
                        return;
                    };
                    if latest.receiver_count() == 0 {
                        continue;
                    }
                    match db.with(async |c: &mut Client| newest(c).await) {
                        Ok(seq) => {
                            latest.send_if_modified(|v| {
                                let newer = seq > *v;
                                *v = (*v).max(seq);
                                newer
                            });
                        }
                        Err(e) => tracing::debug!(error = %Chain(&e), "reading the newest event"),
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot follow other nodes' events; receipts follow this node's");
        }
    }

    fn publish(&self, seq: Option<u64>) {
        if let Some(seq) = seq {
            self.latest.send_if_modified(|v| {
                let newer = seq > *v;
                *v = (*v).max(seq);
                newer
            });
        }
    }

    fn query_jobs(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<Vec<Job>, StoreError> {
        let sql = sql::numbered(sql);
        self.db.with(async |c: &mut Client| {
            let rows = c.query(&sql, args).await?;
            rows.iter().map(row_to_job).collect()
        })
    }
}

/// What refused a fenced change of `file_id`: the job gone, or another node's claim.
async fn refusal(c: &impl tokio_postgres::GenericClient, file_id: &str) -> StoreError {
    match c.query_opt(&sql::numbered(sql::OWNER), &[&file_id]).await {
        Ok(Some(row)) => StoreError::Taken {
            file_id: file_id.to_owned(),
            by: row
                .get::<_, Option<String>>(0)
                .unwrap_or_else(|| "(none)".to_owned()),
        },
        Ok(None) => StoreError::NoJob(file_id.to_owned()),
        Err(e) => e.into(),
    }
}

async fn newest(c: &Client) -> Result<u64, crate::store::DatabaseError> {
    let seq: Option<i64> = c
        .query_one("SELECT MAX(seq) FROM events", &[])
        .await?
        .get(0);
    Ok(seq.unwrap_or(0).max(0) as u64)
}

fn row_to_job(row: &Row) -> Result<Job, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(what.to_owned());
    let state: String = row.try_get(6)?;
    let state = JobState::parse(&state).ok_or_else(|| corrupt(&format!("state {state:?}")))?;
    let counterpart = |i: usize| -> Result<Option<CounterpartId>, StoreError> {
        row.try_get::<_, Option<String>>(i)?
            .map(|s| CounterpartId::new(&s).map_err(|e| corrupt(&e.to_string())))
            .transpose()
    };
    let sha = |i: usize| -> Result<Option<Sha256>, StoreError> {
        row.try_get::<_, Option<String>>(i)?
            .map(|s| Sha256::from_hex(&s).map_err(|e| corrupt(&e.to_string())))
            .transpose()
    };
    Ok(Job {
        file_id: row.try_get(0)?,
        sender: counterpart(1)?.ok_or_else(|| corrupt("no sender"))?,
        original_name: row.try_get(2)?,
        size: row.try_get::<_, i64>(3)?.max(0) as u64,
        sha256: sha(4)?.ok_or_else(|| corrupt("no sha256"))?,
        inbox_key: row.try_get(5)?,
        state,
        recipient: counterpart(7)?,
        sealed_sha256: sha(8)?,
        accepted_at: from_nanos(row.try_get(9)?),
        delivered_at: row.try_get::<_, Option<i64>>(10)?.map(from_nanos),
        retrieved: row.try_get(11)?,
        quarantined: row.try_get(12)?,
        warnings: match row.try_get::<_, Option<String>>(13)? {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("warnings: {e}")))?,
            None => Vec::new(),
        },
        parent: row.try_get(14)?,
        accepted_by: None,
        channel: row
            .try_get::<_, Option<String>>(15)?
            .as_deref()
            .and_then(Channel::parse),
    })
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        StoreError::Database(e.into())
    }
}

/// Appends an event (once per file and hop) with the next number, holding the event lock to
/// commit. Returns its number, or `None` when the hop had its event already.
async fn append_event(tx: &Transaction<'_>, ev: &FileEvent) -> Result<Option<u64>, StoreError> {
    let body = serde_json::to_string(ev).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&locks::EVENTS])
        .await?;
    let row = tx
        .query_opt(
            "INSERT INTO events (seq, file_id, hop, body) \
             SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3 FROM events \
             ON CONFLICT (file_id, hop) DO NOTHING RETURNING seq",
            &[&ev.file_id, &ev.hop.as_str(), &body],
        )
        .await?;
    Ok(row.map(|r| r.get::<_, i64>(0).max(0) as u64))
}

async fn insert_job(tx: &Transaction<'_>, job: &Job) -> Result<bool, StoreError> {
    let warnings = warnings_json(&job.warnings)?;
    let n = tx
        .execute(
            &sql::numbered(sql::INSERT_JOB),
            &[
                &job.file_id,
                &job.sender.as_str(),
                &job.original_name,
                &(job.size as i64),
                &job.sha256.to_hex(),
                &job.inbox_key,
                &job.state.as_str(),
                &job.recipient.as_ref().map(CounterpartId::as_str),
                &nanos(job.accepted_at),
                &warnings,
                &job.parent,
                &job.channel.map(Channel::as_str),
            ],
        )
        .await?;
    Ok(n == 1)
}

async fn planned(tx: &Transaction<'_>, parent: &str) -> Result<Vec<PlannedChild>, StoreError> {
    let rows = tx.query(&sql::numbered(sql::PLANNED), &[&parent]).await?;
    Ok(rows
        .iter()
        .map(|r| PlannedChild {
            insurer: r.get(0),
            file_id: r.get(1),
            day: r.get(2),
            n: u8::try_from(r.get::<_, i32>(3)).unwrap_or(u8::MAX),
        })
        .collect())
}

impl JobStore for PgStore {
    fn insert_accepted(&self, job: &Job) -> Result<bool, StoreError> {
        let seq = self
            .db
            .with(async |c: &mut Client| -> Result<_, StoreError> {
                let tx = c.transaction().await?;
                if !insert_job(&tx, &job.as_accepted()).await? {
                    return Ok(None);
                }
                let seq = append_event(&tx, &job.event(Hop::Accepted, Vec::new())).await?;
                tx.commit().await?;
                Ok(Some(seq))
            })?;
        self.publish(seq.flatten());
        Ok(seq.is_some())
    }

    fn by_inbox_key(&self, key: &str) -> Result<Option<Job>, StoreError> {
        Ok(self
            .query_jobs(sql::BY_INBOX_KEY, &[&key])?
            .into_iter()
            .next())
    }

    fn get(&self, file_id: &str) -> Result<Option<Job>, StoreError> {
        Ok(self.query_jobs(sql::GET, &[&file_id])?.into_iter().next())
    }

    fn claim(&self, file_id: &str) -> Result<Option<Claimed>, StoreError> {
        let sql = sql::numbered(sql::CLAIM);
        let lease = CLAIM_LEASE.as_secs_f64();
        self.db.with(async |c: &mut Client| {
            let Some(row) = c
                .query_opt(&sql, &[&self.db.node(), &lease, &file_id])
                .await?
            else {
                return Ok(None);
            };
            Ok(Some(Claimed {
                job: row_to_job(&row)?,
                taken_over: row.try_get(16)?,
            }))
        })
    }

    fn claim_waiting(&self, limit: usize, queued: &[String]) -> Result<Vec<String>, StoreError> {
        let sql = sql::numbered(sql::CLAIM_WAITING);
        let lease = CLAIM_LEASE.as_secs_f64();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db.with(async |c: &mut Client| {
            let rows = c
                .query(&sql, &[&self.db.node(), &lease, &limit, &queued])
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn renew(&self, file_ids: &[String]) -> Result<(), StoreError> {
        if file_ids.is_empty() {
            return Ok(());
        }
        let sql = sql::numbered(sql::RENEW);
        let lease = CLAIM_LEASE.as_secs_f64();
        self.db.with(async |c: &mut Client| {
            c.execute(&sql, &[&self.db.node(), &lease, &file_ids])
                .await?;
            Ok(())
        })
    }

    fn transition(&self, t: &Transition) -> Result<(), StoreError> {
        let seq = self
            .db
            .with(async |c: &mut Client| -> Result<_, StoreError> {
                let tx = c.transaction().await?;
                let delivered_at =
                    (t.to == JobState::Delivered).then(|| nanos(OffsetDateTime::now_utc()));
                let warnings = warnings_json(&t.warnings)?;
                let n = tx
                    .execute(
                        &sql::claimed(sql::TRANSITION, 8),
                        &[
                            &t.file_id,
                            &t.to.as_str(),
                            &t.recipient.as_ref().map(CounterpartId::as_str),
                            &t.sealed_sha256.map(|s| s.to_hex()),
                            &delivered_at,
                            &t.quarantined,
                            &warnings,
                            &self.db.node(),
                        ],
                    )
                    .await?;
                if n == 0 {
                    return Err(refusal(&tx, &t.file_id).await);
                }
                let seq = match &t.event {
                    Some(ev) => append_event(&tx, ev).await?,
                    None => None,
                };
                tx.commit().await?;
                Ok(seq)
            })?;
        self.publish(seq);
        Ok(())
    }

    fn mark_retrieved(&self, file_id: &str, by: &Handover) -> Result<bool, StoreError> {
        let Some(job) = self.get(file_id)? else {
            return Ok(false);
        };
        if job.retrieved || job.state != JobState::Delivered {
            return Ok(false);
        }
        let seq = self
            .db
            .with(async |c: &mut Client| -> Result<_, StoreError> {
                let tx = c.transaction().await?;
                let n = tx
                    .execute(&sql::numbered(sql::MARK_RETRIEVED), &[&file_id])
                    .await?;
                if n == 0 {
                    return Ok(None);
                }
                let mut event = job.event(Hop::Retrieved, Vec::new());
                event.actor = Some(by.actor.clone());
                event.channel = Some(by.channel);
                let seq = append_event(&tx, &event).await?;
                tx.commit().await?;
                Ok(Some(seq))
            })?;
        self.publish(seq.flatten());
        Ok(seq.is_some())
    }

    fn open_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.query_jobs(sql::OPEN_JOBS, &[])
    }

    fn delivered_to(
        &self,
        recipient: &CounterpartId,
        with_retrieved: bool,
    ) -> Result<Vec<Job>, StoreError> {
        self.query_jobs(sql::DELIVERED_TO, &[&recipient.as_str(), &with_retrieved])
    }

    fn same_content(
        &self,
        sender: &CounterpartId,
        sha256: &Sha256,
    ) -> Result<Vec<Job>, StoreError> {
        self.query_jobs(sql::SAME_CONTENT, &[&sender.as_str(), &sha256.to_hex()])
    }

    fn delivered_before(&self, before: OffsetDateTime) -> Result<Vec<Job>, StoreError> {
        self.query_jobs(sql::DELIVERED_BEFORE, &[&nanos(before)])
    }

    fn has_job(&self, file_id: &str) -> Result<bool, StoreError> {
        self.db.with(async |c: &mut Client| {
            Ok(c.query_opt(&sql::numbered(sql::HAS_JOB), &[&file_id])
                .await?
                .is_some())
        })
    }

    fn plan_split(
        &self,
        parent: &str,
        day: &str,
        insurers: &[&str],
    ) -> Result<Result<Vec<PlannedChild>, String>, StoreError> {
        self.db.with(async |c: &mut Client| {
            let tx = c.transaction().await?;
            // Two nodes planning for one insurer and day take turns, so N is never given twice
            // (the unique constraint would refuse the second anyway).
            tx.execute("LOCK TABLE splits IN SHARE ROW EXCLUSIVE MODE", &[])
                .await?;
            let before = planned(&tx, parent).await?;
            if !before.is_empty() {
                return Ok(Ok(before));
            }
            for insurer in insurers {
                let next: i32 = tx
                    .query_one(&sql::numbered(sql::NEXT_SEND), &[insurer, &day])
                    .await?
                    .get(0);
                if next > i32::from(MAX_SEND_COUNT) {
                    return Ok(Err((*insurer).to_owned()));
                }
                tx.execute(
                    &sql::numbered(sql::PLAN),
                    &[
                        &parent,
                        insurer,
                        &crate::ids::FileId::new().to_string(),
                        &day,
                        &next,
                    ],
                )
                .await?;
            }
            let planned = planned(&tx, parent).await?;
            tx.commit().await?;
            Ok(Ok(planned))
        })
    }

    fn commit_split(
        &self,
        parent: &Job,
        children: &[Job],
        split: &FileEvent,
        rejected: Option<&FileEvent>,
    ) -> Result<(), StoreError> {
        let seq = self
            .db
            .with(async |c: &mut Client| -> Result<_, StoreError> {
                let tx = c.transaction().await?;
                let mut last = None;
                for child in children {
                    if !insert_job(&tx, child).await? {
                        return Err(StoreError::Corrupt(format!(
                            "split child {} recorded before",
                            child.file_id
                        )));
                    }
                    last = append_event(&tx, &child.event(Hop::Accepted, Vec::new()))
                        .await?
                        .or(last);
                }
                let n = tx
                    .execute(
                        &sql::claimed(sql::SET_STATE, 3),
                        &[&parent.file_id, &JobState::Split.as_str(), &self.db.node()],
                    )
                    .await?;
                if n == 0 {
                    return Err(refusal(&tx, &parent.file_id).await);
                }
                last = append_event(&tx, split).await?.or(last);
                if let Some(ev) = rejected {
                    last = append_event(&tx, ev).await?.or(last);
                }
                tx.commit().await?;
                Ok(last)
            })?;
        self.publish(seq);
        Ok(())
    }
}

impl EventLog for PgStore {
    fn events_after(&self, seq: u64, limit: usize) -> Result<Vec<(u64, FileEvent)>, EventLogError> {
        self.db
            .with(async |c: &mut Client| {
                let rows = c
                    .query(
                        &sql::numbered(sql::EVENTS_AFTER),
                        &[&(seq as i64), &(limit as i64)],
                    )
                    .await?;
                rows.iter()
                    .map(|r| {
                        let body: String = r.get(1);
                        let ev: FileEvent = serde_json::from_str(&body)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        Ok((r.get::<_, i64>(0).max(0) as u64, ev))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .map_err(|e| EventLogError(Chain(&e).to_string()))
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }
}
