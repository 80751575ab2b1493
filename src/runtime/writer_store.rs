//! Where the runtime keeps the writer record, which the controller claims
//! (compare-and-set) before every promotion: the record the node guards
//! read, so the new writer's guard finds its node named and the old
//! writer's guard fences its node.

use failover_core::{ActionFailure, ActionId, Input, NodeId, PortErrorKind, WriterRecord};

/// The store behind [`Action::SetWriter`](failover_core::Action::SetWriter)
/// in the single-controller runtime.
#[derive(Clone, Debug, Default)]
pub(crate) enum WriterStore {
    /// No guards and no coordinator: the controller's own belief is the only
    /// record, so a claim has nothing else to change.
    #[default]
    Controller,
    /// The in-process lease server: guards read the record with every renewal.
    Leases(std::sync::Arc<crate::lease::LeaseServer>),
}

impl WriterStore {
    /// The controller adopted a writer it observed (promoted before a
    /// restart): the record names it unless it already names a later epoch.
    pub(crate) fn adopted(&self, record: WriterRecord) {
        if let WriterStore::Leases(server) = self {
            if server.writer().is_none_or(|w| w.epoch < record.epoch) {
                server.set_writer(Some(record));
            }
        }
    }

    /// Executes a claim at once and returns its report.
    pub(crate) fn claim(
        &self,
        id: ActionId,
        expected: Option<WriterRecord>,
        new: WriterRecord,
        guard_absent: Option<NodeId>,
    ) -> Input {
        match self {
            WriterStore::Controller => Input::ActionDone { id },
            WriterStore::Leases(server) => {
                match server.compare_and_set_writer(expected, new, guard_absent) {
                    Ok(()) => Input::ActionDone { id },
                    Err(reason) => {
                        tracing::warn!(action = id.0, %reason, "writer claim refused");
                        Input::ActionFailed {
                            id,
                            failure: ActionFailure {
                                kind: PortErrorKind::Refused,
                                message: reason,
                            },
                        }
                    }
                }
            }
        }
    }
}
