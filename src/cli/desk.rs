//! What `handoff ingest` and `handoff export` share: the counterpart they act for, the operator
//! checked against the config for it, and that counterpart's box opened for the operator over
//! the offline channel.

use std::sync::Arc;

use anyhow::Context;
use handoff::accounts::{AccountId, CounterpartId};
use handoff::boxes::DropBox;
use handoff::config::Loaded;
use handoff::config::live::Snapshot;
use handoff::events::Channel;
use handoff::state::StateLayout;
use handoff::store::Store;

/// An operator at the media desk, acting for one counterpart.
pub struct Desk {
    pub snapshot: Snapshot,
    pub counterpart: CounterpartId,
    pub operator: AccountId,
    pub layout: StateLayout,
    pub store: Store,
}

impl Desk {
    /// Checks `operator` for `counterpart`; `flag` is the option the counterpart was given
    /// with, for the error of an id that is not one.
    pub fn new(
        loaded: Loaded,
        counterpart: &str,
        flag: &str,
        operator: &str,
    ) -> anyhow::Result<Desk> {
        let snapshot = Snapshot::from(loaded);
        let counterpart =
            CounterpartId::new(counterpart).with_context(|| format!("{flag} {counterpart}"))?;
        let operator = handoff::offline::operator(&snapshot, operator, &counterpart)?;
        let layout = StateLayout::new(&snapshot.config.gateway.state_dir);
        let store = Store::of(&snapshot.config.gateway)?;
        Ok(Desk {
            store,
            snapshot,
            counterpart,
            operator,
            layout,
        })
    }

    /// The counterpart's box, opened for the operator (files are sealed at rest with the master
    /// key as they are written, as an upload's are).
    pub fn open_box(&self) -> anyhow::Result<DropBox> {
        let path = &self.snapshot.config.gateway.master_key;
        let master = handoff::keys::load_master_key(path)
            .with_context(|| format!("master key {}", path.display()))?;
        DropBox::open(
            &self.layout,
            self.store.shared_files(&self.layout).as_ref(),
            &self.snapshot,
            &Arc::new(master),
            &self.operator,
            &self.counterpart,
            Channel::Offline,
        )
        .with_context(|| format!("opening the box of {}", self.counterpart))
    }
}
