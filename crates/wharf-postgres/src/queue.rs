//! Placeholder: queues on PostgreSQL (being written).
use std::sync::Arc;

use wharf_core::Result;

use crate::Shared;

pub(crate) struct Queues {
    _shared: Arc<Shared>,
}

impl Queues {
    pub(crate) async fn start(shared: Arc<Shared>) -> Result<Self> {
        Ok(Self { _shared: shared })
    }
}
