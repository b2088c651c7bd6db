//! Placeholder: the event log on PostgreSQL (being written).
use std::sync::Arc;

use wharf_core::Result;

use crate::Shared;

pub(crate) struct Events {
    _shared: Arc<Shared>,
}

impl Events {
    pub(crate) async fn start(shared: Arc<Shared>) -> Result<Self> {
        Ok(Self { _shared: shared })
    }
}
