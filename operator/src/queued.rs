//! A queued ImportJob as it shows: phase `Queued` with its position in the status, and the
//! row's `queue_position` (the job JSON's), set while it waits and cleared when it is
//! admitted. Who is admitted is decided by `crate::admission`.

use crate::{
    admission::{Gate, QUEUE_RECHECK},
    context::Context,
    status::{Observed, Phase},
    status_apply::{apply_status, desired_status, now},
    Result,
};
use bulk_import_core::{crd::ImportJob, JobRow};
use kube::runtime::controller::Action;
use uuid::Uuid;

/// An admitted import is no longer queued: its row says so (when it did).
pub(crate) async fn clear_position(ctx: &Context, id: Uuid, row: Option<&JobRow>) -> Result<()> {
    if let (Some(db), true) = (&ctx.db, row.is_some_and(|r| r.queue_position.is_some())) {
        bulk_import_core::repo::set_queue_position(db, id, None).await?;
    }
    Ok(())
}

/// A queued ImportJob: its position in the row, then the status (phase `Queued`,
/// `queuePosition`); looked at again after [`QUEUE_RECHECK`].
pub(crate) async fn queue(
    ij: &ImportJob,
    ctx: &Context,
    id: Uuid,
    gate: Gate,
    row: Option<&JobRow>,
) -> Result<Action> {
    let Gate::Queued {
        position,
        running,
        limit,
    } = gate
    else {
        return Ok(Action::requeue(QUEUE_RECHECK));
    };
    let at = i32::try_from(position).unwrap_or(i32::MAX);
    if let (Some(db), true) = (&ctx.db, row.is_some_and(|r| r.queue_position != Some(at))) {
        bulk_import_core::repo::set_queue_position(db, id, Some(at)).await?;
    }
    let observed = Observed::new(
        Phase::Queued,
        "WaitingForSlot",
        format!("position {position} in the queue: {running} of {limit} importer Jobs run"),
    );
    let mut desired = desired_status(ij, &observed, None, row, &now());
    desired.queue_position = Some(at);
    apply_status(ij, ctx, &observed, desired).await?;
    Ok(Action::requeue(QUEUE_RECHECK))
}
