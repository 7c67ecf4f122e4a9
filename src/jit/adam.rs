//! Adam updates in native code as wide as the CPU has.
//!
//! An Adam step computes a square root and a division per parameter. Cranelift's x86 back end
//! emits 128-bit vectors at most, so the fused update kernel of a weight runs four of each per
//! instruction, and the divider, not memory, bounds it (the 256 × 256 update of the digits MLP:
//! 41–47 µs as 128-bit code; the same loop on AVX-512 registers takes 10–13 µs, with its arrays
//! evicted from L2 between runs: BENCHMARKS.md, "Third session"). Where a flat kernel is exactly the update the training graph
//! builds (`train::graph`) — per parameter: new moments from the gradient, the bias-corrected
//! step, the new parameter, each stored under the finiteness guard — the code generator fills an
//! argument array (the row base address of every array, the value of every scalar) and calls
//! the function here for its element range instead of emitting the loop
//! (`codegen::Gen::emit_native_update`).
//!
//! [`plan`] recognises the update in a kernel's expressions: the moments `m b1 + d (1 - b1)` and
//! `v b2 + d d (1 - b2)`, the parameter `p - lr (m' c1 / (sqrt(v' c2) + eps) [+ p wd])`, where
//! `d` is a sum of gradient arrays, optionally times a clip factor and plus `p l2`, and every
//! scalar operand is any expression that does not vary along the row. Operands of additions and
//! multiplications match in either order (IEEE addition and multiplication are commutative); the
//! function performs the matched operations in the same order, each one IEEE operation, so its
//! results are bit-for-bit those of the loop it replaces (under the thread's flush-to-zero mode,
//! which both obey). Kernels that differ in any way (other stores, other operations) keep the
//! generated loop. The loop is written once over the lane operations of `jit::vmath` and runs
//! its groups of registers widest first (four AVX-512 registers, then two AVX2 registers, then one
//! `f32`). `MODELC_VMATH=inline` turns this path off with the array functions.

use crate::ir::{BinaryOp, DType, UnaryOp};
use crate::sched::{Expr, ExprId, LoopKernel, Split, StoreSource};

use super::pattern::{Args, Patterns};
use super::vmath::{Group as Registers, Lanes, Variant};

/// Most gradient arrays one update sums (a parameter read in that many places).
pub const MAX_GRADS: usize = 8;

/// What the code generator writes into argument slot `i` (8 bytes each) before the call.
#[derive(Clone, Debug, PartialEq)]
pub enum Slot {
    /// The row base address of a load (element `j` is at `+ 4 j`).
    Load(ExprId),
    /// The row base address of store `i` of the kernel.
    Store(usize),
    /// The value of a row-invariant expression: an f32, or a bool as i32, in the low 4 bytes.
    Scalar(ExprId),
}

/// One parameter's update: argument slots of its arrays and scalars.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// `(old, new)` addresses of the first moment, second moment and parameter (the same
    /// array when updated in place).
    pub m: (usize, usize),
    pub v: (usize, usize),
    pub p: (usize, usize),
    /// Gradient arrays, summed in this order.
    pub grads: Vec<usize>,
    /// The gradient's factor (clipping).
    pub clip: Option<usize>,
    /// `d + p * l2` (L2 weight decay folded into the gradient).
    pub l2: Option<usize>,
    pub beta1: usize,
    pub one_minus_beta1: usize,
    pub beta2: usize,
    pub one_minus_beta2: usize,
    /// Bias corrections `1 / (1 - beta^t)`.
    pub c1: usize,
    pub c2: usize,
    pub eps: usize,
    pub lr: usize,
    /// `step + p * wd` (decoupled weight decay).
    pub decay: Option<usize>,
}

/// A kernel recognised as Adam updates: what to put in the argument array and what to compute.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub slots: Vec<Slot>,
    pub groups: Vec<Group>,
    /// The guard (a bool slot): when false, every store writes the old value.
    pub guard: Option<usize>,
}

/// Whether `k` is computed by a native update (when the path is active on this CPU): the plan
/// if `k` is Adam updates.
pub fn recognise(k: &LoopKernel) -> Option<Plan> {
    plan(k, &super::codegen::invariance(k))
}

/// Recognises `k` as Adam updates (see the module docs); `invariant` says which expressions do
/// not vary along the row.
pub fn plan(k: &LoopKernel, invariant: &[bool]) -> Option<Plan> {
    if k.split != Split::Elements || k.passes != 1 || !k.reductions.is_empty() || k.stores.is_empty() {
        return None;
    }
    let mut m = Matcher { k, invariant, slots: Vec::new() };
    // each store: (guard, new value, old value)
    let mut parts = Vec::new();
    for s in &k.stores {
        let StoreSource::Elem(e) = s.source else { return None };
        if s.dtype != DType::F32 || s.access.inner != 1 {
            return None;
        }
        parts.push(match k.exprs[e as usize] {
            Expr::Select { cond, a, b }
                if invariant[cond as usize] && k.types[cond as usize] == DType::Bool =>
            {
                (Some(cond), a, Some(m.load(b)?))
            }
            _ => (None, e, None),
        });
    }
    let guard = parts[0].0;
    if parts.iter().any(|p| p.0 != guard) {
        return None;
    }
    let mut used = vec![false; parts.len()];
    let mut groups = Vec::new();
    for i in 0..parts.len() {
        let Some(u) = m.update(parts[i].1) else { continue };
        // (a bound keeps the native loop's gradient pointers on its stack)
        if u.grads.len() > MAX_GRADS {
            return None;
        }
        let find = |e: ExprId| parts.iter().position(|p| p.1 == e);
        let (mi, vi) = (find(u.new_m)?, find(u.new_v)?);
        // the guard keeps the old values the update reads
        if guard.is_some()
            && (parts[i].2 != Some(u.p) || parts[mi].2 != Some(u.m) || parts[vi].2 != Some(u.v))
        {
            return None;
        }
        for s in [i, mi, vi] {
            if std::mem::replace(&mut used[s], true) {
                return None;
            }
        }
        let mut pair = |old: ExprId, store: usize| (m.slot(Slot::Load(old)), m.slot(Slot::Store(store)));
        let (m_slots, v_slots, p_slots) = (pair(u.m, mi), pair(u.v, vi), pair(u.p, i));
        let grads = u.grads.iter().map(|&g| m.slot(Slot::Load(g))).collect();
        let mut scalar = |e: ExprId| m.slot(Slot::Scalar(e));
        groups.push(Group {
            m: m_slots,
            v: v_slots,
            p: p_slots,
            grads,
            clip: u.clip.map(&mut scalar),
            l2: u.l2.map(&mut scalar),
            beta1: scalar(u.beta1),
            one_minus_beta1: scalar(u.one_minus_beta1),
            beta2: scalar(u.beta2),
            one_minus_beta2: scalar(u.one_minus_beta2),
            c1: scalar(u.c1),
            c2: scalar(u.c2),
            eps: scalar(u.eps),
            lr: scalar(u.lr),
            decay: u.decay.map(&mut scalar),
        });
    }
    if used.iter().any(|u| !u) {
        return None;
    }
    let guard = guard.map(|g| m.slot(Slot::Scalar(g)));
    Some(Plan { slots: m.slots, groups, guard })
}

/// A matched update, in expression ids.
struct Update {
    p: ExprId,
    m: ExprId,
    v: ExprId,
    new_m: ExprId,
    new_v: ExprId,
    grads: Vec<ExprId>,
    clip: Option<ExprId>,
    l2: Option<ExprId>,
    beta1: ExprId,
    one_minus_beta1: ExprId,
    beta2: ExprId,
    one_minus_beta2: ExprId,
    c1: ExprId,
    c2: ExprId,
    eps: ExprId,
    lr: ExprId,
    decay: Option<ExprId>,
}

struct Matcher<'a> {
    k: &'a LoopKernel,
    invariant: &'a [bool],
    slots: Vec<Slot>,
}

impl Patterns for Matcher<'_> {
    fn kernel(&self) -> &LoopKernel {
        self.k
    }
    fn invariant(&self) -> &[bool] {
        self.invariant
    }
}

impl Matcher<'_> {
    fn slot(&mut self, s: Slot) -> usize {
        self.slots.iter().position(|t| *t == s).unwrap_or_else(|| {
            self.slots.push(s);
            self.slots.len() - 1
        })
    }

    /// `new_p = p - lr * step` (the parameter's new value), and everything it reads.
    fn update(&self, new_p: ExprId) -> Option<Update> {
        let (p, delta) = self.binary(new_p, BinaryOp::Sub)?;
        let p = self.load(p)?;
        let (step, lr) = self.scaled(delta)?;
        // decoupled decay: `core + p * wd`
        let (core, decay) = match self.binary(step, BinaryOp::Add) {
            Some((a, b)) => {
                let decay_of = |x: ExprId| self.scaled(x).filter(|&(q, _)| q == p).map(|(_, s)| s);
                if let Some(wd) = decay_of(b) { (a, Some(wd)) } else { (b, Some(decay_of(a)?)) }
            }
            None => (step, None),
        };
        let (num, den) = self.binary(core, BinaryOp::Div)?;
        let (new_m, c1) = self.scaled(num)?;
        let (a, b) = self.binary(den, BinaryOp::Add)?;
        let (root, eps) =
            if self.invariant[b as usize] { (a, self.scalar(b)?) } else { (b, self.scalar(a)?) };
        let Expr::Unary { op: UnaryOp::Sqrt, x: vhat } = self.k.exprs[root as usize] else { return None };
        let (new_v, c2) = self.scaled(vhat)?;
        // new_v = v * b2 + (d * d) * (1 - b2)
        let (x, y) = self.binary(new_v, BinaryOp::Add)?;
        let square = |t: ExprId| {
            let (dd, s) = self.scaled(t)?;
            let (d1, d2) = self.binary(dd, BinaryOp::Mul)?;
            (d1 == d2).then_some((d1, s))
        };
        let ((d, one_minus_beta2), decayed_v) = match square(y) {
            Some(sq) => (sq, x),
            None => (square(x)?, y),
        };
        let (v, beta2) = self.scaled(decayed_v)?;
        let v = self.load(v)?;
        // new_m = m * b1 + d * (1 - b1)
        let (x, y) = self.binary(new_m, BinaryOp::Add)?;
        let ((x0, sx), (y0, sy)) = (self.scaled(x)?, self.scaled(y)?);
        let ((m, beta1), one_minus_beta1) = if y0 == d {
            ((x0, sx), sy)
        } else if x0 == d {
            ((y0, sy), sx)
        } else {
            return None;
        };
        let m = self.load(m)?;
        let (grads, clip, l2) = self.gradient(d, p)?;
        if [m, v, p].iter().any(|x| grads.contains(x)) || m == v || m == p || v == p {
            return None;
        }
        Some(Update {
            p,
            m,
            v,
            new_m,
            new_v,
            grads,
            clip,
            l2,
            beta1,
            one_minus_beta1,
            beta2,
            one_minus_beta2,
            c1,
            c2,
            eps,
            lr,
            decay,
        })
    }

    /// `d = (g0 + g1 + ...) [* clip] [+ p * l2]`: the gradient arrays, clip and l2 factors.
    #[allow(clippy::type_complexity)]
    fn gradient(&self, d: ExprId, p: ExprId) -> Option<(Vec<ExprId>, Option<ExprId>, Option<ExprId>)> {
        let l2_of = |x: ExprId| self.scaled(x).filter(|&(q, _)| q == p).map(|(_, s)| s);
        let (d, l2) = match self.binary(d, BinaryOp::Add) {
            Some((a, b)) => match (l2_of(b), l2_of(a)) {
                (Some(w), _) => (a, Some(w)),
                (None, Some(w)) => (b, Some(w)),
                (None, None) => (d, None),
            },
            None => (d, None),
        };
        let (sum, clip) = match self.scaled(d) {
            Some((x, s)) => (x, Some(s)),
            None => (d, None),
        };
        let mut grads = Vec::new();
        self.sum_of_loads(sum, &mut grads)?;
        Some((grads, clip, l2))
    }
}

/// Elements `*j..` in steps of `L::LANES` while a whole step fits below `j1`.
///
/// # Safety
/// The group's arrays hold elements `*j..j1`; the CPU has `L`'s features.
#[inline(always)]
unsafe fn run_group<L: Lanes + Registers>(g: &Group, a: &Args, j: &mut usize, j1: usize) {
    let (m0, m1, v0, v1, p0, p1) =
        (a.ptr(g.m.0), a.ptr(g.m.1), a.ptr(g.v.0), a.ptr(g.v.1), a.ptr(g.p.0), a.ptr(g.p.1));
    let mut grads = [std::ptr::null::<f32>(); MAX_GRADS];
    for (p, &s) in grads.iter_mut().zip(&g.grads) {
        *p = a.ptr(s);
    }
    let grads = &grads[..g.grads.len()];
    let s = |i: usize| L::splat(a.f32(i));
    let clip = g.clip.map(s);
    let l2 = g.l2.map(s);
    let decay = g.decay.map(s);
    let (b1, ob1, b2, ob2) = (s(g.beta1), s(g.one_minus_beta1), s(g.beta2), s(g.one_minus_beta2));
    let (c1, c2, eps, lr) = (s(g.c1), s(g.c2), s(g.eps), s(g.lr));
    while *j + L::LANES <= j1 {
        let i = *j;
        // SAFETY: elements i..i + LANES are below j1 (the caller's contract).
        unsafe {
            let mut d = L::load(grads[0].add(i));
            for g in &grads[1..] {
                d = d.add(L::load(g.add(i)));
            }
            let p = L::load(p0.add(i));
            if let Some(c) = clip {
                d = d.mul(c);
            }
            if let Some(w) = l2 {
                d = d.add(p.mul(w));
            }
            let m = L::load(m0.add(i)).mul(b1).add(d.mul(ob1));
            let v = L::load(v0.add(i)).mul(b2).add(d.mul(d).mul(ob2));
            let mut step = m.mul(c1).div(v.mul(c2).sqrt().add(eps));
            if let Some(w) = decay {
                step = step.add(p.mul(w));
            }
            let p = p.sub(lr.mul(step));
            m.store(m1.add(i));
            v.store(v1.add(i));
            p.store(p1.add(i));
        }
        *j += L::LANES;
    }
}

/// Elements `j0..j1` of every group, in steps of `step(g, j, j1)` (the widest register groups
/// first, each function ending with one `f32` at a time).
///
/// # Safety
/// As for [`update_avx512`]; `step` runs only register groups the CPU has.
#[inline(always)]
unsafe fn run(
    plan: &Plan,
    vals: *const u64,
    j0: i64,
    j1: i64,
    step: impl Fn(&Group, &Args, &mut usize, usize),
) {
    let a = Args { vals };
    let (j0, j1) = (j0.max(0) as usize, j1.max(0) as usize);
    if plan.guard.is_some_and(|g| !a.flag(g)) {
        // every store writes the old value
        for g in &plan.groups {
            for (old, new) in [g.m, g.v, g.p] {
                let (old, new) = (a.ptr(old), a.ptr(new));
                if old != new && j1 > j0 {
                    // SAFETY: both arrays hold j0..j1; `copy` allows overlap.
                    unsafe { std::ptr::copy(old.add(j0), new.add(j0), j1 - j0) };
                }
            }
        }
        return;
    }
    for g in &plan.groups {
        let mut j = j0;
        step(g, &a, &mut j, j1);
    }
}

/// A native update's ABI: `(plan, argument slots, j0, j1)`.
pub type UpdateFn = unsafe extern "C" fn(*const Plan, *const u64, i64, i64);

/// The f32 reference (one element at a time).
///
/// # Safety
/// As for [`update_avx512`].
pub unsafe extern "C" fn update_scalar(plan: *const Plan, vals: *const u64, j0: i64, j1: i64) {
    // SAFETY: the caller's contract.
    unsafe { run(&*plan, vals, j0, j1, |g, a, j, j1| run_group::<f32>(g, a, j, j1)) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::vmath::x86::{Ymm, Zmm};
    use super::{Plan, run, run_group};

    /// # Safety
    /// `plan` is the plan the arguments were written for; every slot of `vals` is written; the
    /// arrays hold elements `j0..j1`; the CPU has AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe extern "C" fn update_avx512(plan: *const Plan, vals: *const u64, j0: i64, j1: i64) {
        // SAFETY: the caller's contract; AVX-512F implies AVX2.
        unsafe {
            run(&*plan, vals, j0, j1, |g, a, j, j1| {
                run_group::<Zmm>(g, a, j, j1);
                run_group::<Ymm>(g, a, j, j1);
                run_group::<f32>(g, a, j, j1);
            })
        }
    }

    /// # Safety
    /// As for [`update_avx512`], with AVX2 instead of AVX-512F.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe extern "C" fn update_avx2(plan: *const Plan, vals: *const u64, j0: i64, j1: i64) {
        // SAFETY: the caller's contract.
        unsafe {
            run(&*plan, vals, j0, j1, |g, a, j, j1| {
                run_group::<Ymm>(g, a, j, j1);
                run_group::<f32>(g, a, j, j1);
            })
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{update_avx2, update_avx512};

/// The update function of `variant`.
pub fn function(variant: Variant) -> UpdateFn {
    #[cfg(target_arch = "x86_64")]
    {
        match variant {
            Variant::Avx512 => update_avx512,
            Variant::Avx2 => update_avx2,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = variant;
        update_scalar
    }
}
