//! Buffer planning: temporaries are placed in slots by liveness (first to last kernel that
//! binds them); a slot freed by an earlier kernel is reused by a later buffer of equal or
//! smaller size (best fit). Outputs and update values stay live to the end of the run.

use super::kernel::{BufferId, Kernel};
use super::{Buffer, BufferRole};

/// Where every temporary buffer lives.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BufferPlan {
    /// Size of each slot in 4-byte elements.
    pub slots: Vec<usize>,
    /// The slot of each buffer (`None` for inputs and parameters).
    pub slot_of: Vec<Option<usize>>,
    /// Bytes the temporaries would take without reuse.
    pub unplanned_bytes: usize,
}

impl BufferPlan {
    /// Bytes of all slots.
    pub fn total_bytes(&self) -> usize {
        self.slots.iter().sum::<usize>() * 4
    }
}

pub(super) fn plan_buffers(
    kernels: &[Kernel],
    buffers: &[Buffer],
    outputs: &[BufferId],
    updates: &[(u32, BufferId)],
) -> BufferPlan {
    let n = buffers.len();
    let mut first = vec![usize::MAX; n];
    let mut last = vec![0usize; n];
    for (k, kern) in kernels.iter().enumerate() {
        for b in &kern.args {
            let i = b.0 as usize;
            first[i] = first[i].min(k);
            last[i] = last[i].max(k);
        }
    }
    for b in outputs.iter().chain(updates.iter().map(|(_, b)| b)) {
        last[b.0 as usize] = usize::MAX;
    }
    let mut plan = BufferPlan { slots: Vec::new(), slot_of: vec![None; n], unplanned_bytes: 0 };
    let mut free: Vec<usize> = Vec::new();
    for k in 0..kernels.len() {
        // allocate everything this kernel starts using before releasing what it finishes, so a
        // kernel never writes over its own inputs
        for (i, buf) in buffers.iter().enumerate() {
            if buf.role != BufferRole::Temp || first[i] != k {
                continue;
            }
            plan.unplanned_bytes += buf.elems * 4;
            let best = free
                .iter()
                .enumerate()
                .filter(|&(_, &s)| plan.slots[s] >= buf.elems)
                .min_by_key(|&(_, &s)| plan.slots[s])
                .map(|(pos, _)| pos);
            let slot = match best {
                Some(pos) => free.swap_remove(pos),
                None => {
                    plan.slots.push(buf.elems);
                    plan.slots.len() - 1
                }
            };
            plan.slot_of[i] = Some(slot);
        }
        for (i, buf) in buffers.iter().enumerate() {
            if buf.role == BufferRole::Temp
                && last[i] == k
                && let Some(s) = plan.slot_of[i]
            {
                free.push(s);
            }
        }
    }
    plan
}
