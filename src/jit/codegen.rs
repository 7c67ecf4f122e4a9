//! Lowers one [`LoopKernel`] to a Cranelift function
//! `extern "C" fn(bufs: *const *mut u8, start: i64, end: i64)`.
//!
//! Loop structure per row: the row's coordinates and every access's row base address are
//! computed once; then each pass evaluates its j-invariant expressions once, runs a loop of
//! four f32x4 bodies (16 elements, four accumulators per reduction), a loop of one f32x4 body,
//! and a scalar tail; in row kernels, whose row length is known here, a loop that cannot run
//! for that length is not emitted. Passes with strided, indirect or sequential work (scans,
//! arg-max, top-k, scatter) run the scalar loop only. A vector pass that applies `exp` or `erf`
//! along the row runs its 16-element steps in chunks instead: the functions' arguments into
//! stack arrays, one call per array to `jit::vmath` (AVX-512 or AVX2), then the rest of the pass
//! on the results ([`Gen::emit_native_chunks`]). A flat kernel recognised as Adam updates
//! (`jit::adam`) is one call of a native function instead of any loop
//! ([`Gen::emit_native_update`]); a row kernel recognised as a softmax (`jit::softmax`) keeps
//! one generated pass storing the softmax's operand and calls a native function per block of
//! rows for the rest ([`Gen::emit_softmax_rows`]); a kernel whose stores are GELUs of sums of
//! arrays (`jit::gelu`) calls a native function per row and store ([`Gen::emit_gelu_rows`]).
//!
//! Row-blocked mode: when no pass vectorises along `j` but consecutive rows are consecutive in
//! memory (column sums: bias and layer-norm parameter gradients), the lanes are four rows
//! instead: blocks of 16 rows (four vectors, independent accumulators) and of 4 rows run one
//! scalar `j` loop, and the rows left over (range ends, wraps of the last outer dimension) take
//! the scalar path. Each row sees the same operations in the same order either way.

use super::adam;
use super::gelu;
use super::math;
use super::scalar_calls::{self, clif_type, emit_call};
use super::softmax;
use super::stream;
use super::vmath;
use crate::ir::{BinaryOp, DType, UnaryOp};
use crate::sched::{Access, Expr, ExprId, LoopKernel, ReduceKind, Split, Store, StoreSource};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    AbiParam, Block, ConstantData, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind, Type,
    Value, types,
};
use cranelift_frontend::{FunctionBuilder, Variable};
use std::collections::{HashMap, HashSet};

/// Why a kernel could not be compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct CodegenError(pub String);

/// Flags for lane-type-changing vector bitcasts (the lane order must be stated).
fn little_endian() -> MemFlagsData {
    MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
}

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

struct Gen<'a, 'f> {
    b: &'a mut FunctionBuilder<'f>,
    k: &'a LoopKernel,
    bufs: Vec<Value>,
    invariant: Vec<bool>,
    /// Row base address (bytes) of each expression's access, or the row index value (i64) of
    /// `Index` / `Random` accesses.
    row_expr: HashMap<ExprId, Value>,
    row_store: Vec<Value>,
    slots: Vec<Option<Value>>,
    /// Row-blocked mode (see [`row_blockable`]): the row group (four consecutive rows, one per
    /// lane) being evaluated; `None` in the ordinary mode, where lanes are consecutive `j`.
    group: Option<usize>,
    /// Row-blocked mode: each slot's value for each row group of the block (`f32x4` / `i32x4`).
    group_slots: Vec<[Option<Value>; BLOCK_GROUPS]>,
}

/// An `exp` or `erf` a vector pass computes with an array function of `jit::vmath`.
struct Native {
    e: ExprId,
    /// Its argument.
    arg: ExprId,
    /// The array function's address.
    f: usize,
}

/// Row groups (of four rows) in a full block of the row-blocked mode.
const BLOCK_GROUPS: usize = 4;

/// Emits the whole function body into `b` (whose signature is `(i64, i64, i64)`).
pub fn emit_kernel(b: &mut FunctionBuilder<'_>, k: &LoopKernel) -> Result<(), CodegenError> {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let params = b.block_params(entry).to_vec();
    let (bufs_ptr, start, end) = (params[0], params[1], params[2]);
    let mut bufs = Vec::new();
    for i in 0..k.num_buffers {
        bufs.push(b.ins().load(types::I64, MemFlagsData::trusted(), bufs_ptr, (i * 8) as i32));
    }
    let invariant = invariance(k);
    // a softmax over rows: one generated pass stores its operand, a native function does the rest
    let softmax = native_softmax(k, &invariant);
    let operand_kernel;
    let k = match &softmax {
        Some((plan, _)) => {
            operand_kernel = softmax_operand(k, plan);
            &operand_kernel
        }
        None => k,
    };
    let mut g = Gen {
        b,
        k,
        bufs,
        invariant,
        row_expr: HashMap::new(),
        row_store: Vec::new(),
        slots: vec![None; k.reductions.len()],
        group: None,
        group_slots: vec![[None; BLOCK_GROUPS]; k.reductions.len()],
    };
    let native_update = if k.split == Split::Elements { vmath::active() } else { None }
        .and_then(|variant| adam::plan(k, &g.invariant).map(|plan| (plan, adam::function(variant))));
    let gelu_rows =
        vmath::active().and_then(|v| gelu::recognise(k, &g.invariant).map(|p| (p, gelu::function(v))));
    match k.split {
        _ if let Some((plan, f)) = native_update => g.emit_native_update(plan, f, start, end),
        _ if let Some((_, f)) = softmax => g.emit_softmax_rows(f, start, end),
        _ if let Some((plans, f)) = gelu_rows => g.emit_gelu_rows(&plans, f, start, end),
        Split::Elements => {
            let row = g.b.ins().iconst(types::I64, 0);
            g.emit_row(row, start, end);
        }
        Split::Rows if g.row_blockable() => g.emit_row_blocks(start, end),
        Split::Rows | Split::Serial => {
            let r = g.b.declare_var(types::I64);
            g.b.def_var(r, start);
            let rows = g.begin_loop(r, |g, rv| g.b.ins().icmp(IntCC::SignedLessThan, rv, end));
            g.emit_next_row(r);
            g.end_loop(rows);
        }
    }
    g.b.ins().return_(&[]);
    Ok(())
}

/// The native softmax row function for `k` ([`softmax`]), if `k` is a softmax and the
/// generated code would have summed its numerators in the order the function follows (a vector
/// pass, or a row too short for one).
fn native_softmax(k: &LoopKernel, invariant: &[bool]) -> Option<(softmax::Plan, softmax::RowsFn)> {
    let variant = vmath::active()?;
    let plan = softmax::recognise(k)?;
    let p = Plan { k, invariant };
    (k.inner < 4 || p.vectorizable(1, &p.needed(1), true)).then(|| (plan, softmax::function(variant)))
}

/// Whether `k` runs as native softmax rows ([`softmax`]) on this machine.
pub fn native_softmax_rows(k: &LoopKernel) -> bool {
    native_softmax(k, &invariance(k)).is_some()
}

/// The GELU rows of `k` ([`gelu::recognise`] with the kernel's invariance), whether or not the
/// native path is active on this machine.
pub fn gelu_rows(k: &LoopKernel) -> Option<Vec<gelu::Plan>> {
    gelu::recognise(k, &invariance(k))
}

/// The softmax kernel `k` reduced to its first step: one pass storing the operand into the
/// output (the only store, index 0).
fn softmax_operand(k: &LoopKernel, plan: &softmax::Plan) -> LoopKernel {
    let store = Store { source: StoreSource::Elem(plan.x), pass: 0, ..k.stores[plan.store].clone() };
    LoopKernel { passes: 1, reductions: Vec::new(), stores: vec![store], ..k.clone() }
}

/// What a kernel's passes can do, decided from the kernel alone (before any code is emitted).
struct Plan<'a> {
    k: &'a LoopKernel,
    /// Per expression: it does not depend on `j` ([`invariance`]).
    invariant: &'a [bool],
}

impl Plan<'_> {
    /// The expressions pass `p` needs, in id order.
    fn needed(&self, p: u32) -> Vec<ExprId> {
        let k = self.k;
        let mut roots = Vec::new();
        for r in k.reductions.iter().filter(|r| r.pass == p) {
            roots.push(r.value);
        }
        for s in k.stores.iter().filter(|s| s.pass == p) {
            match &s.source {
                StoreSource::Elem(v) | StoreSource::ScanSum(v) => roots.push(*v),
                StoreSource::AddIndirect { value, index, .. } => roots.extend([*value, *index]),
                StoreSource::TopK { value, .. } => roots.push(*value),
                StoreSource::Slot(_) => {}
            }
        }
        let mut seen = HashSet::new();
        while let Some(e) = roots.pop() {
            if seen.insert(e) {
                roots.extend(k.exprs[e as usize].operands());
            }
        }
        let mut v: Vec<ExprId> = seen.into_iter().collect();
        v.sort_unstable();
        v
    }

    /// Whether pass `p` runs on vectors along `j`. With `strided`, loads and stores strided
    /// along `j` are allowed in a pass without reductions (their lanes are loaded or stored
    /// one by one; a reduction keeps its scalar order).
    fn vectorizable(&self, p: u32, needed: &[ExprId], strided: bool) -> bool {
        let k = self.k;
        let strided = strided && k.reductions.iter().all(|r| r.pass != p);
        for &e in needed {
            if self.invariant[e as usize] {
                continue;
            }
            match &k.exprs[e as usize] {
                Expr::Load { access, .. } if access.inner != 1 && !strided => return false,
                Expr::GatherLoad { access, .. } if access.inner != 1 => return false,
                Expr::GatherLoad { guards, .. }
                    if guards.iter().any(|g| !self.invariant[g.index as usize]) =>
                {
                    return false;
                }
                _ => {}
            }
        }
        if k.reductions.iter().any(|r| r.pass == p && r.kind == ReduceKind::ArgMax) {
            return false;
        }
        k.stores.iter().filter(|s| s.pass == p).all(|s| match &s.source {
            StoreSource::Elem(_) => s.access.inner == 1 || (strided && s.access.inner != 0),
            StoreSource::Slot(_) => true,
            StoreSource::ScanSum(_) | StoreSource::AddIndirect { .. } | StoreSource::TopK { .. } => false,
        })
    }

    /// Whether the kernel runs in the row-blocked mode: no pass can vectorise along `j` (its
    /// accesses are strided there, e.g. a column sum walking down the rows), but consecutive
    /// rows are consecutive in memory for every access that depends on the row (the last outer
    /// dimension has stride 1; stride 0 is a value shared by the rows). Lanes are then four
    /// consecutive rows evaluated with the same scalar `j` loop, so each row sees the same
    /// operations in the same order as on the scalar path, which runs the rows left over.
    fn row_blockable(&self) -> bool {
        let k = self.k;
        let Some(last) = k.outer.len().checked_sub(1) else { return false };
        (0..k.passes).all(|p| {
            let needed = self.needed(p);
            !self.vectorizable(p, &needed, false) && self.row_vectorizable(p, &needed, last)
        })
    }

    fn row_vectorizable(&self, p: u32, needed: &[ExprId], last: usize) -> bool {
        let k = self.k;
        let exprs_ok = needed.iter().all(|&e| match &k.exprs[e as usize] {
            Expr::Load { access, .. } => matches!(access.outer[last], 0 | 1),
            Expr::GatherLoad { .. } | Expr::Index { .. } | Expr::Random { .. } => false,
            Expr::Const { .. }
            | Expr::RowScalar { .. }
            | Expr::Unary { .. }
            | Expr::Binary { .. }
            | Expr::Select { .. }
            | Expr::Cast { .. } => true,
        });
        let reds_ok = k.reductions.iter().all(|r| r.pass != p || r.kind != ReduceKind::ArgMax);
        let stores_ok = k.stores.iter().filter(|s| s.pass == p).all(|s| match &s.source {
            StoreSource::Elem(_) | StoreSource::Slot(_) => s.access.outer[last] == 1,
            StoreSource::ScanSum(_) | StoreSource::AddIndirect { .. } | StoreSource::TopK { .. } => false,
        });
        exprs_ok && reds_ok && stores_ok
    }
}

/// Whether a loop kernel runs in the row-blocked mode (lanes are four consecutive rows; see
/// the module docs). Its rows are best split between threads in multiples of [`ROW_BLOCK`].
pub fn row_blocked(k: &LoopKernel) -> bool {
    k.split == Split::Rows && Plan { k, invariant: &invariance(k) }.row_blockable()
}

/// Rows in a full block of the row-blocked mode.
pub const ROW_BLOCK: usize = 4 * BLOCK_GROUPS;

/// Zeros that a guarded load whose index is out of range reads instead of its buffer.
#[repr(align(64))]
struct Zeros([u8; 1 << 16]);
static ZEROS: Zeros = Zeros([0; 1 << 16]);

/// Which expressions do not depend on `j` (evaluated once per row and pass).
pub(super) fn invariance(k: &LoopKernel) -> Vec<bool> {
    let mut inv = vec![false; k.exprs.len()];
    for (i, e) in k.exprs.iter().enumerate() {
        inv[i] = match e {
            Expr::Const { .. } | Expr::RowScalar { .. } => true,
            Expr::Load { access, .. } | Expr::Index { access } => access.inner == 0,
            Expr::GatherLoad { access, guards, .. } => {
                access.inner == 0 && guards.iter().all(|g| inv[g.index as usize])
            }
            Expr::Random { access, key, .. } => access.inner == 0 && inv[*key as usize],
            Expr::Unary { x, .. } | Expr::Cast { x, .. } => inv[*x as usize],
            Expr::Binary { a, b, .. } => inv[*a as usize] && inv[*b as usize],
            Expr::Select { cond, a, b } => inv[*cond as usize] && inv[*a as usize] && inv[*b as usize],
        };
    }
    inv
}

fn is_zero_const(e: &Expr) -> bool {
    matches!(e, Expr::Const { bits, dtype: DType::F32 } if *bits == 0f64.to_bits())
}

/// Per-body memo of evaluated expressions, keyed by (expression, vector width).
type Memo = HashMap<(ExprId, bool), Value>;

impl Gen<'_, '_> {
    fn ty(&self, e: ExprId, vector: bool) -> Type {
        clif_type(self.k.types[e as usize] == DType::F32, vector)
    }

    fn row_part(&mut self, coords: &[Value], access: &Access) -> Value {
        let mut off = self.b.ins().iconst(types::I64, access.offset);
        for (d, &c) in coords.iter().enumerate() {
            if access.outer[d] != 0 {
                let t = self.b.ins().imul_imm_s(c, access.outer[d]);
                off = self.b.ins().iadd(off, t);
            }
        }
        off
    }

    fn row_addr(&mut self, buf: u32, coords: &[Value], access: &Access) -> Value {
        let off = self.row_part(coords, access);
        let bytes = self.b.ins().ishl_imm_u(off, 2);
        self.b.ins().iadd(self.bufs[buf as usize], bytes)
    }

    fn emit_row(&mut self, row: Value, j0: Value, j1: Value) {
        self.row_bases(row);
        for p in 0..self.k.passes {
            self.emit_pass(p, j0, j1);
        }
    }

    /// Computes the row base address of every access (and clears the slots) for `row`.
    fn row_bases(&mut self, row: Value) {
        let k = self.k;
        // coordinates of the row in the outer dimensions (row-major)
        let mut coords = vec![row; k.outer.len()];
        let mut rem = row;
        for d in (0..k.outer.len()).rev() {
            if d == 0 {
                coords[d] = rem;
            } else if k.outer[d].is_power_of_two() {
                // a mask and a shift (kernels compiled without optimisation would divide)
                let size = k.outer[d] as i64;
                coords[d] = self.b.ins().band_imm_s(rem, size - 1);
                rem = self.b.ins().ushr_imm_u(rem, size.trailing_zeros() as i64);
            } else {
                let size = self.b.ins().iconst(types::I64, k.outer[d] as i64);
                coords[d] = self.b.ins().urem(rem, size);
                rem = self.b.ins().udiv(rem, size);
            }
        }
        self.row_expr.clear();
        for (i, e) in k.exprs.iter().enumerate() {
            let v = match e {
                Expr::Load { buf, access, .. } | Expr::GatherLoad { buf, access, .. } => {
                    self.row_addr(*buf, &coords, access)
                }
                Expr::Index { access } | Expr::Random { access, .. } => self.row_part(&coords, access),
                Expr::Const { .. }
                | Expr::RowScalar { .. }
                | Expr::Unary { .. }
                | Expr::Binary { .. }
                | Expr::Select { .. }
                | Expr::Cast { .. } => continue,
            };
            self.row_expr.insert(i as ExprId, v);
        }
        self.row_store = k.stores.iter().map(|s| self.row_addr(s.buf, &coords, &s.access)).collect();
        for s in self.slots.iter_mut() {
            *s = None;
        }
        for s in self.group_slots.iter_mut() {
            *s = [None; BLOCK_GROUPS];
        }
    }

    fn plan(&self) -> Plan<'_> {
        Plan { k: self.k, invariant: &self.invariant }
    }

    fn needed(&self, p: u32) -> Vec<ExprId> {
        self.plan().needed(p)
    }

    fn vectorizable(&self, p: u32, needed: &[ExprId], strided: bool) -> bool {
        self.plan().vectorizable(p, needed, strided)
    }

    fn row_blockable(&self) -> bool {
        self.plan().row_blockable()
    }

    /// The row loop of the row-blocked mode: blocks of 16 rows (four vectors), then of 4 rows,
    /// then single rows on the ordinary (scalar) path. A block never crosses the end of the
    /// range or a wrap of the last outer dimension (where rows stop being consecutive).
    /// One row (the row variable `r`, over all of `j`), then `r += 1`.
    fn emit_next_row(&mut self, r: Variable) {
        let rv = self.b.use_var(r);
        let j0 = self.b.ins().iconst(types::I64, 0);
        let j1 = self.b.ins().iconst(types::I64, self.k.inner as i64);
        self.emit_row(rv, j0, j1);
        let rv = self.b.use_var(r);
        let rn = self.b.ins().iadd_imm_s(rv, 1);
        self.b.def_var(r, rn);
    }

    /// Folds the vector value at `j` of each reduction `reds[ri]` into its accumulator
    /// `acc(ri)`.
    fn accumulate(&mut self, reds: &[usize], acc: impl Fn(usize) -> Variable, j: Value, memo: &mut Memo) {
        let k = self.k;
        for (ri, &r) in reds.iter().enumerate() {
            let red = &k.reductions[r];
            let v = self.eval(red.value, true, Some(j), memo);
            let dt = k.types[red.value as usize];
            let a = self.b.use_var(acc(ri));
            let c = self.combine(red.kind, dt, a, v);
            self.b.def_var(acc(ri), c);
        }
    }

    fn emit_row_blocks(&mut self, start: Value, end: Value) {
        let k = self.k;
        let line = *k.outer.last().expect("row-blocked kernels have outer dimensions") as i64;
        let r = self.b.declare_var(types::I64);
        self.b.def_var(r, start);
        let head = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(head, &[]);
        self.b.switch_to_block(head);
        let rv = self.b.use_var(r);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, rv, end);
        let first = self.b.create_block();
        self.b.ins().brif(more, first, &[], exit, &[]);
        self.b.switch_to_block(first);
        self.b.seal_block(first);
        for groups in [BLOCK_GROUPS, 1] {
            let size = 4 * groups as i64;
            let block = self.b.create_block();
            let next = self.b.create_block();
            let rv = self.b.use_var(r);
            let rn = self.b.ins().iadd_imm_s(rv, size);
            let mut fits = self.b.ins().icmp(IntCC::SignedLessThanOrEqual, rn, end);
            if k.outer.len() > 1 {
                // the block stays within one line of the last dimension
                let pos = self.b.ins().urem_imm_u(rv, line);
                let pn = self.b.ins().iadd_imm_s(pos, size);
                let in_line = self.b.ins().icmp_imm_s(IntCC::SignedLessThanOrEqual, pn, line);
                fits = self.b.ins().band(fits, in_line);
            }
            self.b.ins().brif(fits, block, &[], next, &[]);
            self.b.switch_to_block(block);
            self.b.seal_block(block);
            self.row_bases(rv);
            for p in 0..k.passes {
                self.emit_block_pass(p, groups);
            }
            self.group = None;
            self.b.def_var(r, rn);
            self.b.ins().jump(head, &[]);
            self.b.switch_to_block(next);
            self.b.seal_block(next);
        }
        self.emit_next_row(r);
        self.b.ins().jump(head, &[]);
        self.b.seal_block(head);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }

    /// Pass `p` of a row block of `groups` groups of four rows: one `j` loop whose body
    /// evaluates every group (independent accumulators, one row per lane).
    fn emit_block_pass(&mut self, p: u32, groups: usize) {
        let k = self.k;
        let needed = self.needed(p);
        // j-invariant values, once per group and pass (they may differ between rows)
        let mut inv: Vec<Memo> = Vec::new();
        for u in 0..groups {
            self.group = Some(u);
            let mut memo = Memo::new();
            for &e in &needed {
                if self.invariant[e as usize] {
                    self.eval(e, true, None, &mut memo);
                }
            }
            inv.push(memo);
        }
        let reds: Vec<usize> = (0..k.reductions.len()).filter(|&i| k.reductions[i].pass == p).collect();
        let mut acc: Vec<Vec<Variable>> = Vec::new();
        for &r in &reds {
            let red = &k.reductions[r];
            let dt = k.types[red.value as usize];
            let vars = (0..groups)
                .map(|_| {
                    let v = self.b.declare_var(clif_type(dt == DType::F32, true));
                    let init = self.reduce_init(red.kind, dt, true);
                    self.b.def_var(v, init);
                    v
                })
                .collect();
            acc.push(vars);
        }
        let j = self.b.declare_var(types::I64);
        let j0 = self.b.ins().iconst(types::I64, 0);
        self.b.def_var(j, j0);
        let head = self.b.create_block();
        let body = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(head, &[]);
        self.b.switch_to_block(head);
        let jv = self.b.use_var(j);
        let more = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, jv, k.inner as i64);
        self.b.ins().brif(more, body, &[], exit, &[]);
        self.b.switch_to_block(body);
        let jv = self.b.use_var(j);
        for (u, inv_u) in inv.iter().enumerate() {
            self.group = Some(u);
            let mut memo = inv_u.clone();
            self.accumulate(&reds, |ri| acc[ri][u], jv, &mut memo);
            for (si, s) in k.stores.iter().enumerate() {
                if let (true, StoreSource::Elem(v)) = (s.pass == p, &s.source) {
                    let val = self.eval(*v, true, Some(jv), &mut memo);
                    let addr = self.addr_at(self.row_store[si], s.access.inner, jv);
                    self.b.ins().store(flags(), val, addr, 16 * u as i32);
                }
            }
        }
        let jn = self.b.ins().iadd_imm_s(jv, 1);
        self.b.def_var(j, jn);
        self.b.ins().jump(head, &[]);
        self.b.seal_block(body);
        self.b.seal_block(head);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        for (vars, &r) in acc.iter().zip(&reds) {
            for (u, &var) in vars.iter().enumerate() {
                self.group_slots[r][u] = Some(self.b.use_var(var));
            }
        }
        for (si, s) in k.stores.iter().enumerate() {
            if let (true, StoreSource::Slot(slot)) = (s.pass == p, &s.source) {
                for u in 0..groups {
                    let v = self.group_slots[*slot as usize][u].expect("slot computed in this pass");
                    self.b.ins().store(flags(), v, self.row_store[si], 16 * u as i32);
                }
            }
        }
    }

    // the unroll index selects both the offset and the accumulator set
    #[allow(clippy::needless_range_loop)]
    fn emit_pass(&mut self, p: u32, j0: Value, j1: Value) {
        let k = self.k;
        let needed = self.needed(p);
        // rows run j over 0..inner, known now: loops that cannot run are not emitted (less
        // code to compile; flat kernels get a thread's element range at run time)
        let n_static = (k.split != Split::Elements).then_some(k.inner as i64);
        let vector = self.vectorizable(p, &needed, true) && n_static.is_none_or(|n| n >= 4);
        // j-invariant values, once per row and pass
        let mut inv_scalar: Memo = HashMap::new();
        for &e in &needed {
            if self.invariant[e as usize] {
                self.eval(e, false, None, &mut inv_scalar);
            }
        }
        let mut inv_vector: Memo = inv_scalar.clone();
        if vector {
            for &e in &needed {
                if self.invariant[e as usize] {
                    let ty = self.ty(e, true);
                    let s = self.b.ins().splat(ty, inv_scalar[&(e, false)]);
                    inv_vector.insert((e, true), s);
                }
            }
        }
        let reds: Vec<usize> = (0..k.reductions.len()).filter(|&i| k.reductions[i].pass == p).collect();
        let j = self.b.declare_var(types::I64);
        self.b.def_var(j, j0);
        // scalar accumulators (and ArgMax indices), then vector accumulators x4
        let mut acc_s = Vec::new();
        let mut acc_i = Vec::new();
        let mut acc_v: Vec<[Variable; 4]> = Vec::new();
        for &r in &reds {
            let red = &k.reductions[r];
            let dt = k.types[red.value as usize];
            // arg-max compares order keys (i32), see `order_key`
            let acc_dt = if red.kind == ReduceKind::ArgMax { DType::I32 } else { dt };
            let ty = clif_type(acc_dt == DType::F32, false);
            let var = self.b.declare_var(ty);
            let init = self.reduce_init(red.kind, acc_dt, false);
            self.b.def_var(var, init);
            acc_s.push(var);
            let iv = self.b.declare_var(types::I32);
            let z = self.b.ins().iconst(types::I32, 0);
            self.b.def_var(iv, z);
            acc_i.push(iv);
            if vector {
                let vty = clif_type(dt == DType::F32, true);
                let vars = [0; 4].map(|_| {
                    let v = self.b.declare_var(vty);
                    let init = self.reduce_init(red.kind, dt, true);
                    self.b.def_var(v, init);
                    v
                });
                acc_v.push(vars);
            }
        }
        let scan_vars: Vec<Option<Variable>> = k
            .stores
            .iter()
            .map(|s| {
                if s.pass == p && matches!(s.source, StoreSource::ScanSum(_)) {
                    let ty = clif_type(s.dtype == DType::F32, false);
                    let v = self.b.declare_var(ty);
                    let z = self.zero(s.dtype, false);
                    self.b.def_var(v, z);
                    Some(v)
                } else {
                    None
                }
            })
            .collect();
        let streams = vector && reds.is_empty() && self.streams(p);
        if streams {
            self.emit_stream_chunks(p, j, j1, &inv_vector);
        }
        // exp / erf along the row computed in native chunks (`jit::vmath`): they take every
        // whole 16 elements, so the 16-wide loop is not needed
        let natives = if vector && !streams { self.native_nodes(&needed) } else { Vec::new() };
        if !natives.is_empty() && n_static.is_none_or(|n| n >= 16) {
            self.emit_native_chunks(p, j, j1, &natives, &inv_vector, &reds, &acc_v, &scan_vars);
        }
        if vector {
            for (step, unroll) in [(16i64, 4usize), (4, 1)] {
                // what is left for the 4-wide loop is n % 16 (n itself when n < 16)
                if n_static.is_some_and(|n| (step == 16 && n < 16) || (step == 4 && n % 16 < 4)) {
                    continue;
                }
                if step == 16 && !natives.is_empty() {
                    continue;
                }
                let blocks = self.begin_loop(j, |g, jv| {
                    let jn = g.b.ins().iadd_imm_s(jv, step);
                    g.b.ins().icmp(IntCC::SignedLessThanOrEqual, jn, j1)
                });
                let jv = self.b.use_var(j);
                for u in 0..unroll {
                    let ju = self.b.ins().iadd_imm_s(jv, 4 * u as i64);
                    let mut memo = inv_vector.clone();
                    self.accumulate(&reds, |ri| acc_v[ri][u], ju, &mut memo);
                    self.emit_stores(p, true, ju, &mut memo, &scan_vars);
                }
                let jn = self.b.ins().iadd_imm_s(jv, step);
                self.b.def_var(j, jn);
                self.end_loop(blocks);
            }
            // fold the vector accumulators into the scalar ones
            for (ri, &r) in reds.iter().enumerate() {
                let red = &k.reductions[r];
                let dt = k.types[red.value as usize];
                let mut v = self.b.use_var(acc_v[ri][0]);
                for &var in &acc_v[ri][1..] {
                    let w = self.b.use_var(var);
                    v = self.combine(red.kind, dt, v, w);
                }
                let mut s = self.b.use_var(acc_s[ri]);
                for l in 0..4u8 {
                    let x = self.b.ins().extractlane(v, l);
                    s = self.combine(red.kind, dt, s, x);
                }
                self.b.def_var(acc_s[ri], s);
            }
        }
        // scalar loop (the tail of the vector loops, or the whole pass)
        if !(vector && n_static.is_some_and(|n| n % 4 == 0)) {
            let blocks = self.begin_loop(j, |g, jv| g.b.ins().icmp(IntCC::SignedLessThan, jv, j1));
            let jv = self.b.use_var(j);
            let mut memo = inv_scalar.clone();
            for (ri, &r) in reds.iter().enumerate() {
                let red = &k.reductions[r];
                let v = self.eval(red.value, false, Some(jv), &mut memo);
                let dt = k.types[red.value as usize];
                if red.kind == ReduceKind::ArgMax {
                    let best = self.b.use_var(acc_s[ri]);
                    let kv = self.order_key(v, dt);
                    let better = self.b.ins().icmp(IntCC::SignedGreaterThan, kv, best);
                    let nb = self.b.ins().select(better, kv, best);
                    self.b.def_var(acc_s[ri], nb);
                    let bi = self.b.use_var(acc_i[ri]);
                    let j32 = self.b.ins().ireduce(types::I32, jv);
                    let ni = self.b.ins().select(better, j32, bi);
                    self.b.def_var(acc_i[ri], ni);
                } else {
                    let acc = self.b.use_var(acc_s[ri]);
                    let c = self.combine(red.kind, dt, acc, v);
                    self.b.def_var(acc_s[ri], c);
                }
            }
            self.emit_stores(p, false, jv, &mut memo, &scan_vars);
            let jn = self.b.ins().iadd_imm_s(jv, 1);
            self.b.def_var(j, jn);
            self.end_loop(blocks);
        }
        for (ri, &r) in reds.iter().enumerate() {
            let v = if k.reductions[r].kind == ReduceKind::ArgMax {
                self.b.use_var(acc_i[ri])
            } else {
                self.b.use_var(acc_s[ri])
            };
            self.slots[r] = Some(v);
        }
        for (si, s) in k.stores.iter().enumerate() {
            if s.pass != p {
                continue;
            }
            match &s.source {
                StoreSource::Slot(slot) => {
                    let v = self.slots[*slot as usize].expect("slot computed in this pass");
                    self.b.ins().store(flags(), v, self.row_store[si], 0);
                }
                StoreSource::TopK { value, k: kk, out_stride } => {
                    self.emit_topk(*value, *kk, *out_stride, self.row_store[si], j0, j1, &inv_scalar);
                }
                StoreSource::Elem(_) | StoreSource::ScanSum(_) | StoreSource::AddIndirect { .. } => {}
            }
        }
    }

    /// Whether pass `p` streams its outputs (`jit::stream`): a flat kernel of at least
    /// `stream::MIN_ELEMS` elements whose pass stores one to four values element by element,
    /// contiguously.
    fn streams(&self, p: u32) -> bool {
        let k = self.k;
        let stores: Vec<&Store> = k.stores.iter().filter(|s| s.pass == p).collect();
        k.split == Split::Elements
            && k.inner >= stream::MIN_ELEMS
            && (1..=4).contains(&stores.len())
            && stores.iter().all(|s| matches!(s.source, StoreSource::Elem(_)) && s.access.inner == 1)
    }

    /// Whole chunks of `stream::CHUNK` elements from `j` while they fit below `j1`: the
    /// pass's values are computed 16 elements at a time into one stack array per output, then
    /// copied out with streaming stores; a fence follows the last chunk. What is left (less
    /// than a chunk) runs the ordinary vector loops, with ordinary stores.
    fn emit_stream_chunks(&mut self, p: u32, j: Variable, j1: Value, inv_vector: &Memo) {
        let k = self.k;
        let stores: Vec<(usize, ExprId)> = k
            .stores
            .iter()
            .enumerate()
            .filter(|(_, s)| s.pass == p)
            .filter_map(|(si, s)| match s.source {
                StoreSource::Elem(v) => Some((si, v)),
                _ => None,
            })
            .collect();
        let arrays = self.stack_arrays(stores.len(), stream::CHUNK);
        let copy_sig = self.pointer_args_sig(3);
        let fence_sig = self.pointer_args_sig(0);
        let chunks = self.begin_loop(j, |g, jv| {
            let jn = g.b.ins().iadd_imm_s(jv, stream::CHUNK as i64);
            g.b.ins().icmp(IntCC::SignedLessThanOrEqual, jn, j1)
        });
        let jc = self.b.use_var(j);
        // the chunk: 16 elements per iteration, into the stack arrays
        let u = self.b.declare_var(types::I64);
        let zero = self.b.ins().iconst(types::I64, 0);
        self.b.def_var(u, zero);
        let elems =
            self.begin_loop(u, |g, uv| g.b.ins().icmp_imm_s(IntCC::SignedLessThan, uv, stream::CHUNK as i64));
        let uv = self.b.use_var(u);
        let ub = self.b.ins().ishl_imm_u(uv, 2);
        let j0 = self.b.ins().iadd(jc, uv);
        for s in 0..4i64 {
            let ju = self.b.ins().iadd_imm_s(j0, 4 * s);
            let mut memo = inv_vector.clone();
            for (a, &(_, v)) in stores.iter().enumerate() {
                let val = self.eval(v, true, Some(ju), &mut memo);
                let addr = self.b.ins().iadd(arrays[a], ub);
                self.b.ins().store(flags(), val, addr, (16 * s) as i32);
            }
        }
        let un = self.b.ins().iadd_imm_s(uv, 16);
        self.b.def_var(u, un);
        self.end_loop(elems);
        // ... then out, one streaming copy per output
        let copy = self.b.ins().iconst(types::I64, stream::copy_fn() as i64);
        let n = self.b.ins().iconst(types::I64, stream::CHUNK as i64);
        for (a, &(si, _)) in stores.iter().enumerate() {
            let dst = self.addr_at(self.row_store[si], 1, jc);
            self.b.ins().call_indirect(copy_sig, copy, &[dst, arrays[a], n]);
        }
        let jn = self.b.ins().iadd_imm_s(jc, stream::CHUNK as i64);
        self.b.def_var(j, jn);
        self.end_loop(chunks);
        let fence = self.b.ins().iconst(types::I64, stream::fence_fn() as i64);
        self.b.ins().call_indirect(fence_sig, fence, &[]);
    }

    /// The expressions of a vector pass that [`Self::emit_native_chunks`] computes with the
    /// array functions of `jit::vmath`: `exp` and `erf` of f32 values that vary along the row,
    /// whose arguments need no other such expression (an `exp(erf(x))` computes its inner
    /// function natively and its outer one inline).
    fn native_nodes(&self, needed: &[ExprId]) -> Vec<Native> {
        let k = self.k;
        let candidate = |e: ExprId| -> Option<Native> {
            match k.exprs[e as usize] {
                Expr::Unary { op, x } if !self.invariant[e as usize] && k.types[e as usize] == DType::F32 => {
                    vmath::array_fn(op).map(|f| Native { e, arg: x, f })
                }
                _ => None,
            }
        };
        // a candidate at or below the argument
        let nested = |n: &Native| k.any_below(n.arg, |y| candidate(y).is_some());
        needed.iter().filter_map(|&e| candidate(e)).filter(|n| !nested(n)).collect()
    }

    /// The pass's body over chunks of the row of up to `vmath::CHUNK` elements (whole multiples
    /// of 16) from `j`: first the arguments of the `natives` into one stack array each, then one
    /// call per array computing the function in place, then the pass's reductions and stores
    /// with the natives' values loaded from the arrays. Element `j + 16 i + 4 u` goes to
    /// accumulator set `u` as in the 16-wide loop, so every reduction adds in the same order;
    /// the array functions give the inline code's bits. What is left (less than 16) runs the
    /// 4-wide and scalar loops.
    // the unroll index selects both the offset and the accumulator set
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    fn emit_native_chunks(
        &mut self,
        p: u32,
        j: Variable,
        j1: Value,
        natives: &[Native],
        inv_vector: &Memo,
        reds: &[usize],
        acc_v: &[[Variable; 4]],
        scan_vars: &[Option<Variable>],
    ) {
        let arrays = self.stack_arrays(natives.len(), vmath::CHUNK);
        let sig = self.pointer_args_sig(2);
        let chunks = self.begin_loop(j, |g, jv| {
            let jn = g.b.ins().iadd_imm_s(jv, 16);
            g.b.ins().icmp(IntCC::SignedLessThanOrEqual, jn, j1)
        });
        let jc = self.b.use_var(j);
        // len = min(j1 - j, CHUNK) rounded down to 16
        let left = self.b.ins().isub(j1, jc);
        let cap = self.b.ins().iconst(types::I64, vmath::CHUNK as i64);
        let len = self.b.ins().smin(left, cap);
        let len = self.b.ins().band_imm_s(len, !15);
        let u = self.b.declare_var(types::I64);
        for phase in 0..2 {
            let zero = self.b.ins().iconst(types::I64, 0);
            self.b.def_var(u, zero);
            let body = self.begin_loop(u, |g, uv| g.b.ins().icmp(IntCC::SignedLessThan, uv, len));
            let uv = self.b.use_var(u);
            let ub = self.b.ins().ishl_imm_u(uv, 2);
            let j0 = self.b.ins().iadd(jc, uv);
            for s in 0..4usize {
                let ju = self.b.ins().iadd_imm_s(j0, 4 * s as i64);
                let mut memo = inv_vector.clone();
                if phase == 0 {
                    for (a, n) in natives.iter().enumerate() {
                        let val = self.eval(n.arg, true, Some(ju), &mut memo);
                        let addr = self.b.ins().iadd(arrays[a], ub);
                        self.b.ins().store(flags(), val, addr, (16 * s) as i32);
                    }
                } else {
                    for (a, n) in natives.iter().enumerate() {
                        let addr = self.b.ins().iadd(arrays[a], ub);
                        let val = self.b.ins().load(types::F32X4, flags(), addr, (16 * s) as i32);
                        memo.insert((n.e, true), val);
                    }
                    self.accumulate(reds, |ri| acc_v[ri][s], ju, &mut memo);
                    self.emit_stores(p, true, ju, &mut memo, scan_vars);
                }
            }
            let un = self.b.ins().iadd_imm_s(uv, 16);
            self.b.def_var(u, un);
            self.end_loop(body);
            if phase == 0 {
                for (a, n) in natives.iter().enumerate() {
                    let callee = self.b.ins().iconst(types::I64, n.f as i64);
                    self.b.ins().call_indirect(sig, callee, &[arrays[a], len]);
                }
            }
        }
        let jn = self.b.ins().iadd(jc, len);
        self.b.def_var(j, jn);
        self.end_loop(chunks);
    }

    /// A softmax's rows ([`softmax`]): blocks of up to `softmax::BLOCK` rows, each row's
    /// operand stored into its output row by the generated pass and the row's address into a
    /// stack array, then one call of the native function on the block.
    fn emit_softmax_rows(&mut self, f: softmax::RowsFn, start: Value, end: Value) {
        let sig = self.pointer_args_sig(3);
        let ptrs = self.stack_arrays(1, 2 * softmax::BLOCK)[0];
        let r = self.b.declare_var(types::I64);
        self.b.def_var(r, start);
        let blocks = self.begin_loop(r, |g, rv| g.b.ins().icmp(IntCC::SignedLessThan, rv, end));
        let r0 = self.b.use_var(r);
        let full = self.b.ins().iadd_imm_s(r0, softmax::BLOCK as i64);
        let r1 = self.b.ins().smin(full, end);
        let rows = self.begin_loop(r, |g, rv| g.b.ins().icmp(IntCC::SignedLessThan, rv, r1));
        let rv = self.b.use_var(r);
        let j0 = self.b.ins().iconst(types::I64, 0);
        let n = self.b.ins().iconst(types::I64, self.k.inner as i64);
        self.emit_row(rv, j0, n);
        let i = self.b.ins().isub(rv, r0);
        let off = self.b.ins().ishl_imm_u(i, 3);
        let slot = self.b.ins().iadd(ptrs, off);
        self.b.ins().store(flags(), self.row_store[0], slot, 0);
        let rn = self.b.ins().iadd_imm_s(rv, 1);
        self.b.def_var(r, rn);
        self.end_loop(rows);
        let count = self.b.ins().isub(r1, r0);
        let n = self.b.ins().iconst(types::I64, self.k.inner as i64);
        let callee = self.b.ins().iconst(types::I64, f as usize as i64);
        self.b.ins().call_indirect(sig, callee, &[ptrs, count, n]);
        self.end_loop(blocks);
    }

    /// GELU rows ([`gelu`]): per row (or the thread's element range of a flat kernel) and
    /// store, the output's and the loads' addresses and the scalars into an argument array, then
    /// one call of the native row function.
    fn emit_gelu_rows(&mut self, plans: &[gelu::Plan], f: gelu::RowFn, start: Value, end: Value) {
        let sig = self.pointer_args_sig(2);
        let args = self.stack_arrays(1, 2 * gelu::ARGS)[0];
        let flat = self.k.split == Split::Elements;
        let r = self.b.declare_var(types::I64);
        let first = if flat { self.b.ins().iconst(types::I64, 0) } else { start };
        self.b.def_var(r, first);
        let last = if flat { self.b.ins().iconst(types::I64, 1) } else { end };
        let rows = self.begin_loop(r, |g, rv| g.b.ins().icmp(IntCC::SignedLessThan, rv, last));
        let rv = self.b.use_var(r);
        self.row_bases(rv);
        // elements j0..j0 + n of the row
        let (j0, n) = if flat {
            (start, self.b.ins().isub(end, start))
        } else {
            (self.b.ins().iconst(types::I64, 0), self.b.ins().iconst(types::I64, self.k.inner as i64))
        };
        let skip = self.b.ins().ishl_imm_u(j0, 2);
        let mut memo: Memo = HashMap::new();
        let put = |g: &mut Self, i: usize, v: Value| {
            g.b.ins().store(flags(), v, args, (8 * i) as i32);
        };
        for plan in plans {
            let out = self.b.ins().iadd(self.row_store[plan.store], skip);
            put(self, 0, out);
            for (i, e) in [plan.a, plan.b, plan.c].into_iter().enumerate() {
                let v = self.eval(e, false, None, &mut memo);
                let bits = self.b.ins().bitcast(types::I32, MemFlagsData::new(), v);
                let word = self.b.ins().uextend(types::I64, bits);
                put(self, 1 + i, word);
            }
            let count = self.b.ins().iconst(types::I64, plan.loads.len() as i64);
            put(self, 4, count);
            for (i, &l) in plan.loads.iter().enumerate() {
                let base = self.b.ins().iadd(self.row_expr[&l], skip);
                put(self, 5 + i, base);
            }
            let callee = self.b.ins().iconst(types::I64, f as usize as i64);
            self.b.ins().call_indirect(sig, callee, &[args, n]);
        }
        let rv = self.b.use_var(r);
        let rn = self.b.ins().iadd_imm_s(rv, 1);
        self.b.def_var(r, rn);
        self.end_loop(rows);
    }

    /// The whole kernel as one call of a native Adam update ([`adam`]): the row base address of
    /// every array and the value of every scalar the plan names go into an argument array on the
    /// stack, then `f(plan, args, start, end)` runs the element range.
    fn emit_native_update(&mut self, plan: adam::Plan, f: adam::UpdateFn, start: Value, end: Value) {
        let row = self.b.ins().iconst(types::I64, 0);
        self.row_bases(row);
        let args = self.stack_arrays(1, 2 * plan.slots.len())[0];
        let mut memo: Memo = HashMap::new();
        for (i, slot) in plan.slots.iter().enumerate() {
            let v = match *slot {
                adam::Slot::Load(e) => self.row_expr[&e],
                adam::Slot::Store(s) => self.row_store[s],
                adam::Slot::Scalar(e) => self.eval(e, false, None, &mut memo),
            };
            self.b.ins().store(flags(), v, args, (8 * i) as i32);
        }
        // the plan lives as long as the code that refers to it (generated code is never freed)
        let plan: &'static adam::Plan = Box::leak(Box::new(plan));
        let sig = self.pointer_args_sig(4);
        let plan = self.b.ins().iconst(types::I64, plan as *const adam::Plan as i64);
        let callee = self.b.ins().iconst(types::I64, f as usize as i64);
        self.b.ins().call_indirect(sig, callee, &[plan, args, start, end]);
    }

    /// `count` stack arrays of `elems` 4-byte elements, 64-byte aligned; their addresses.
    fn stack_arrays(&mut self, count: usize, elems: usize) -> Vec<Value> {
        let bytes = (elems * 4) as u32;
        (0..count)
            .map(|_| {
                let slot =
                    self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, bytes, 6));
                self.b.ins().stack_addr(types::I64, slot, 0)
            })
            .collect()
    }

    /// The signature of a Rust function of `params` 64-bit arguments that returns nothing.
    fn pointer_args_sig(&mut self, params: usize) -> cranelift_codegen::ir::SigRef {
        let mut sig = Signature::new(self.b.func.signature.call_conv);
        sig.params.extend(std::iter::repeat_n(AbiParam::new(types::I64), params));
        self.b.import_signature(sig)
    }

    /// Opens a loop: emits its head, which tests `cond` of the loop variable's current value,
    /// and continues in its body. The body updates the variable; [`Self::end_loop`] closes it.
    fn begin_loop(&mut self, var: Variable, cond: impl FnOnce(&mut Self, Value) -> Value) -> [Block; 3] {
        let head = self.b.create_block();
        let body = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(head, &[]);
        self.b.switch_to_block(head);
        let v = self.b.use_var(var);
        let go = cond(self, v);
        self.b.ins().brif(go, body, &[], exit, &[]);
        self.b.switch_to_block(body);
        [head, body, exit]
    }

    /// Closes a loop from [`Self::begin_loop`]: back to its head, then on after it.
    fn end_loop(&mut self, [head, body, exit]: [Block; 3]) {
        self.b.ins().jump(head, &[]);
        self.b.seal_block(body);
        self.b.seal_block(head);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }

    fn emit_stores(
        &mut self,
        p: u32,
        vector: bool,
        j: Value,
        memo: &mut Memo,
        scan_vars: &[Option<Variable>],
    ) {
        let k = self.k;
        for (si, s) in k.stores.iter().enumerate() {
            if s.pass != p {
                continue;
            }
            match &s.source {
                StoreSource::Elem(v) => {
                    let val = self.eval(*v, vector, Some(j), memo);
                    let addr = self.addr_at(self.row_store[si], s.access.inner, j);
                    if vector && s.access.inner != 1 {
                        // strided along j (one slice of a concatenation, say): lane by lane,
                        // in order
                        for lane in 0..4u8 {
                            let x = self.b.ins().extractlane(val, lane);
                            let at = self.b.ins().iadd_imm_s(addr, s.access.inner * 4 * lane as i64);
                            self.b.ins().store(flags(), x, at, 0);
                        }
                    } else {
                        self.b.ins().store(flags(), val, addr, 0);
                    }
                }
                StoreSource::ScanSum(v) => {
                    let val = self.eval(*v, false, Some(j), memo);
                    let var = scan_vars[si].expect("scan variable declared for this pass");
                    let acc = self.b.use_var(var);
                    let sum = if s.dtype == DType::F32 {
                        self.b.ins().fadd(acc, val)
                    } else {
                        self.b.ins().iadd(acc, val)
                    };
                    self.b.def_var(var, sum);
                    let addr = self.addr_at(self.row_store[si], s.access.inner, j);
                    self.b.ins().store(flags(), sum, addr, 0);
                }
                StoreSource::AddIndirect { value, index, rows, row_stride } => {
                    let val = self.eval(*value, false, Some(j), memo);
                    let idx = self.eval(*index, false, Some(j), memo);
                    let valid = self.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, idx, *rows as i64);
                    let skip = self.b.create_block();
                    let doit = self.b.create_block();
                    self.b.ins().brif(valid, doit, &[], skip, &[]);
                    self.b.switch_to_block(doit);
                    self.b.seal_block(doit);
                    let idx64 = self.b.ins().sextend(types::I64, idx);
                    let roff = self.b.ins().imul_imm_s(idx64, *row_stride * 4);
                    let base = self.b.ins().iadd(self.row_store[si], roff);
                    let addr = self.addr_at(base, s.access.inner, j);
                    let ty = clif_type(s.dtype == DType::F32, false);
                    let old = self.b.ins().load(ty, flags(), addr, 0);
                    let new = if s.dtype == DType::F32 {
                        self.b.ins().fadd(old, val)
                    } else {
                        self.b.ins().iadd(old, val)
                    };
                    self.b.ins().store(flags(), new, addr, 0);
                    self.b.ins().jump(skip, &[]);
                    self.b.switch_to_block(skip);
                    self.b.seal_block(skip);
                }
                StoreSource::Slot(_) | StoreSource::TopK { .. } => {}
            }
        }
    }

    /// Sweeps the row `k` times; sweep `t` finds the largest element strictly after the
    /// previous pick in the order (value descending, index ascending).
    #[allow(clippy::too_many_arguments)]
    fn emit_topk(
        &mut self,
        value: ExprId,
        kk: u32,
        out_stride: i64,
        out: Value,
        j0: Value,
        j1: Value,
        inv: &Memo,
    ) {
        let dt = self.k.types[value as usize];
        let ty = types::I32;
        let pv = self.b.declare_var(ty);
        let pj = self.b.declare_var(types::I64);
        let top = self.b.ins().iconst(types::I32, i32::MAX as i64);
        self.b.def_var(pv, top);
        let m1 = self.b.ins().iconst(types::I64, -1);
        self.b.def_var(pj, m1);
        for t in 0..kk {
            let best = self.b.declare_var(ty);
            let bj = self.b.declare_var(types::I64);
            let bottom = self.b.ins().iconst(types::I32, i32::MIN as i64);
            self.b.def_var(best, bottom);
            let m1 = self.b.ins().iconst(types::I64, -1);
            self.b.def_var(bj, m1);
            let j = self.b.declare_var(types::I64);
            self.b.def_var(j, j0);
            let head = self.b.create_block();
            let body = self.b.create_block();
            let exit = self.b.create_block();
            self.b.ins().jump(head, &[]);
            self.b.switch_to_block(head);
            let jv = self.b.use_var(j);
            let more = self.b.ins().icmp(IntCC::SignedLessThan, jv, j1);
            self.b.ins().brif(more, body, &[], exit, &[]);
            self.b.switch_to_block(body);
            let jv = self.b.use_var(j);
            let mut memo = inv.clone();
            let raw = self.eval(value, false, Some(jv), &mut memo);
            let v = self.order_key(raw, dt);
            let (pvv, pjv, bv, bjv) =
                (self.b.use_var(pv), self.b.use_var(pj), self.b.use_var(best), self.b.use_var(bj));
            let lt = self.b.ins().icmp(IntCC::SignedLessThan, v, pvv);
            let eq = self.b.ins().icmp(IntCC::Equal, v, pvv);
            let gt = self.b.ins().icmp(IntCC::SignedGreaterThan, v, bv);
            let after_prev = self.b.ins().icmp(IntCC::SignedGreaterThan, jv, pjv);
            let tie_after = self.b.ins().band(eq, after_prev);
            let candidate = self.b.ins().bor(lt, tie_after);
            let none_yet = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, bjv, 0);
            let better = self.b.ins().bor(gt, none_yet);
            let take = self.b.ins().band(candidate, better);
            let nb = self.b.ins().select(take, v, bv);
            let nj = self.b.ins().select(take, jv, bjv);
            self.b.def_var(best, nb);
            self.b.def_var(bj, nj);
            let jn = self.b.ins().iadd_imm_s(jv, 1);
            self.b.def_var(j, jn);
            self.b.ins().jump(head, &[]);
            self.b.seal_block(body);
            self.b.seal_block(head);
            self.b.switch_to_block(exit);
            self.b.seal_block(exit);
            let bv = self.b.use_var(best);
            let bjv = self.b.use_var(bj);
            let idx = self.b.ins().ireduce(types::I32, bjv);
            self.b.ins().store(flags(), idx, out, (t as i64 * out_stride * 4) as i32);
            self.b.def_var(pv, bv);
            self.b.def_var(pj, bjv);
        }
    }

    /// An i32 whose signed order is the value order of arg-max and top-k: floats by their
    /// sign-magnitude bits flipped to two's complement order, -0.0 as +0.0, NaN above +inf.
    fn order_key(&mut self, v: Value, dt: DType) -> Value {
        if dt != DType::F32 {
            return v;
        }
        let zero = self.b.ins().f32const(0.0);
        let z = self.b.ins().fadd(v, zero);
        let bits = self.b.ins().bitcast(types::I32, MemFlagsData::new(), z);
        let sign = self.b.ins().sshr_imm_u(bits, 31);
        let mask = self.b.ins().ushr_imm_u(sign, 1);
        let key = self.b.ins().bxor(bits, mask);
        let nan = self.b.ins().fcmp(FloatCC::Unordered, v, v);
        let top = self.b.ins().iconst(types::I32, i32::MAX as i64);
        self.b.ins().select(nan, top, key)
    }

    fn addr_at(&mut self, base: Value, inner: i64, j: Value) -> Value {
        if inner == 0 {
            return base;
        }
        let off = self.b.ins().imul_imm_s(j, inner * 4);
        self.b.ins().iadd(base, off)
    }

    fn zero(&mut self, dt: DType, vector: bool) -> Value {
        let s =
            if dt == DType::F32 { self.b.ins().f32const(0.0) } else { self.b.ins().iconst(types::I32, 0) };
        if vector { self.b.ins().splat(clif_type(dt == DType::F32, true), s) } else { s }
    }

    fn reduce_init(&mut self, kind: ReduceKind, dt: DType, vector: bool) -> Value {
        let float = dt == DType::F32;
        let s = match (kind, float) {
            (ReduceKind::Sum, true) => self.b.ins().f32const(0.0),
            (ReduceKind::Sum, false) => self.b.ins().iconst(types::I32, 0),
            (ReduceKind::Max | ReduceKind::ArgMax, true) => self.b.ins().f32const(f32::NEG_INFINITY),
            (ReduceKind::Max | ReduceKind::ArgMax, false) => self.b.ins().iconst(types::I32, i32::MIN as i64),
            (ReduceKind::Min, true) => self.b.ins().f32const(f32::INFINITY),
            (ReduceKind::Min, false) => self.b.ins().iconst(types::I32, i32::MAX as i64),
        };
        if vector { self.b.ins().splat(clif_type(float, true), s) } else { s }
    }

    fn combine(&mut self, kind: ReduceKind, dt: DType, a: Value, x: Value) -> Value {
        let float = dt == DType::F32;
        match (kind, float) {
            (ReduceKind::Sum, true) => self.b.ins().fadd(a, x),
            (ReduceKind::Sum, false) => self.b.ins().iadd(a, x),
            (ReduceKind::Max | ReduceKind::ArgMax, true) => self.b.ins().fmax(a, x),
            (ReduceKind::Max | ReduceKind::ArgMax, false) => self.b.ins().smax(a, x),
            (ReduceKind::Min, true) => self.b.ins().fmin(a, x),
            (ReduceKind::Min, false) => self.b.ins().smin(a, x),
        }
    }

    /// Converts a comparison result (i8 scalar or lane mask) to i32 0 / 1.
    fn bool_from_cmp(&mut self, c: Value, vector: bool) -> Value {
        if vector {
            let ty = self.b.func.dfg.value_type(c);
            let m =
                if ty == types::I32X4 { c } else { self.b.ins().bitcast(types::I32X4, little_endian(), c) };
            let one = self.b.ins().iconst(types::I32, 1);
            let ones = self.b.ins().splat(types::I32X4, one);
            self.b.ins().band(m, ones)
        } else {
            self.b.ins().uextend(types::I32, c)
        }
    }

    fn eval(&mut self, e: ExprId, vector: bool, j: Option<Value>, memo: &mut Memo) -> Value {
        if let Some(&v) = memo.get(&(e, vector)) {
            return v;
        }
        let k = self.k;
        let dt = k.types[e as usize];
        let float = dt == DType::F32;
        let ty = clif_type(float, vector);
        if vector && self.invariant[e as usize] && self.group.is_none() {
            let s = self.eval(e, false, None, memo);
            let v = self.b.ins().splat(ty, s);
            memo.insert((e, true), v);
            return v;
        }
        // invariant expressions evaluated in a body use the scalar path, then splat
        let jv = if self.invariant[e as usize] { None } else { j };
        let v = match &k.exprs[e as usize] {
            Expr::Const { bits, dtype } => {
                let x = f64::from_bits(*bits);
                let s = if *dtype == DType::F32 {
                    self.b.ins().f32const(x as f32)
                } else {
                    self.b.ins().iconst(types::I32, x as i32 as i64)
                };
                if vector { self.b.ins().splat(ty, s) } else { s }
            }
            Expr::Load { access, .. } => {
                let base = self.row_expr[&e];
                let addr = match jv {
                    None => base,
                    Some(j) => self.addr_at(base, access.inner, j),
                };
                // what the lanes walk: j (ordinary mode) or the rows of a group (row-blocked
                // mode, where a load with outer stride 0 is one value for every row)
                let (lanes_vary, offset) = match self.group {
                    None => (jv.is_some(), 0),
                    Some(u) => (access.outer.last() != Some(&0), 16 * u as i32),
                };
                if vector && lanes_vary && self.group.is_none() && access.inner != 1 {
                    // strided along j (a layout change such as NHWC -> NCHW): the four lanes
                    // are four scalar loads, so the arithmetic and the store stay vectors
                    let sty = clif_type(float, false);
                    let first = self.b.ins().load(sty, flags(), addr, 0);
                    let mut v = self.b.ins().scalar_to_vector(ty, first);
                    for lane in 1..4u8 {
                        let at = self.b.ins().iadd_imm_s(addr, access.inner * 4 * lane as i64);
                        let x = self.b.ins().load(sty, flags(), at, 0);
                        v = self.b.ins().insertlane(v, x, lane);
                    }
                    v
                } else if vector && lanes_vary {
                    self.b.ins().load(ty, flags(), addr, offset)
                } else {
                    let s = self.b.ins().load(clif_type(float, false), flags(), addr, 0);
                    if vector { self.b.ins().splat(ty, s) } else { s }
                }
            }
            Expr::GatherLoad { access, guards, .. } => {
                debug_assert!(self.group.is_none(), "gathers are not row-blocked");
                // every index in range (unsigned compare), and the byte offset of the indices.
                // Where a row's loads all fit in `ZEROS`, a row out of range reads from it
                // instead (a plain load of zeros); otherwise the indices are clamped (an index
                // out of range reads row 0) and the loaded value is masked to zero.
                let reach = (k.inner as i64).saturating_mul(access.inner.max(1)).saturating_mul(4);
                let redirect =
                    k.split != Split::Elements && access.inner >= 0 && reach + 64 <= ZEROS.0.len() as i64;
                let mut valid = None;
                let mut base = self.row_expr[&e];
                let zero32 = self.b.ins().iconst(types::I32, 0);
                for g in guards {
                    let idx = self.eval(g.index, false, j, memo);
                    let ok = self.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, idx, g.rows as i64);
                    let safe = if redirect { idx } else { self.b.ins().select(ok, idx, zero32) };
                    let idx64 = self.b.ins().sextend(types::I64, safe);
                    let roff = self.b.ins().imul_imm_s(idx64, g.stride * 4);
                    base = self.b.ins().iadd(base, roff);
                    valid = Some(match valid {
                        None => ok,
                        Some(v) => self.b.ins().band(v, ok),
                    });
                }
                let valid = valid.expect("a guarded load has at least one guard");
                if redirect {
                    let zeros = self.b.ins().iconst(types::I64, ZEROS.0.as_ptr() as i64);
                    base = self.b.ins().select(valid, base, zeros);
                }
                let (addr, lty) = match jv {
                    None => (base, clif_type(float, false)),
                    Some(j) => (self.addr_at(base, access.inner, j), ty),
                };
                let loaded = self.b.ins().load(lty, flags(), addr, 0);
                if redirect {
                    if vector && !lty.is_vector() { self.b.ins().splat(ty, loaded) } else { loaded }
                } else if lty.is_vector() {
                    // the guards do not depend on j: an all-ones or all-zeros lane mask, built
                    // once per row (hoisted), ANDed in (a select on vectors would branch)
                    let ones = self.b.ins().iconst(types::I32, -1);
                    let bits = self.b.ins().select(valid, ones, zero32);
                    let mask = self.b.ins().splat(types::I32X4, bits);
                    if float {
                        let mask = self.b.ins().bitcast(types::F32X4, little_endian(), mask);
                        self.b.ins().band(loaded, mask)
                    } else {
                        self.b.ins().band(loaded, mask)
                    }
                } else {
                    let z = self.zero(dt, false);
                    let s = self.b.ins().select(valid, loaded, z);
                    if vector { self.b.ins().splat(ty, s) } else { s }
                }
            }
            Expr::Index { access } => {
                debug_assert!(self.group.is_none(), "iota is not row-blocked");
                self.index_value(e, access.inner, vector, jv)
            }
            Expr::Random { key, stream, access } => {
                debug_assert!(self.group.is_none(), "random values are not row-blocked");
                // `ir::random_uniform_value`, inline on i32 lanes (wrapping ops only)
                let index = self.index_value(e, access.inner, vector, jv);
                let keyv = self.eval(*key, vector, j, memo);
                let ity = clif_type(false, vector);
                let c = |g: &mut Self, x: i64| {
                    let s = g.b.ins().iconst(types::I32, x);
                    if vector { g.b.ins().splat(ity, s) } else { s }
                };
                let golden = c(self, 0x9e37_79b9u32 as i32 as i64);
                let k0 = self.b.ins().bxor(keyv, golden);
                let k1 = self.mix32(k0, vector);
                let st = c(self, *stream as i32 as i64);
                let k2 = self.b.ins().bxor(k1, st);
                let seed = self.mix32(k2, vector);
                let h0 = self.b.ins().bxor(index, seed);
                let h1 = self.mix32(h0, vector);
                let h2 = self.b.ins().iadd(h1, seed);
                let h = self.mix32(h2, vector);
                let top = self.b.ins().ushr_imm_u(h, 8);
                let f = self.b.ins().fcvt_from_sint(ty, top);
                let scale = self.b.ins().f32const(1.0 / 16_777_216.0);
                let scale = if vector { self.b.ins().splat(ty, scale) } else { scale };
                self.b.ins().fmul(f, scale)
            }
            Expr::RowScalar { slot } => match self.group {
                Some(u) => {
                    self.group_slots[*slot as usize][u].expect("row scalar computed in an earlier pass")
                }
                None => {
                    let s = self.slots[*slot as usize].expect("row scalar computed in an earlier pass");
                    if vector { self.b.ins().splat(ty, s) } else { s }
                }
            },
            Expr::Unary { op, x } => {
                let xv = self.eval(*x, vector, j, memo);
                self.unary(*op, dt, xv, vector)
            }
            Expr::Binary { op, a, b } => {
                // which operand, if any, is the constant +0.0 (for the ReLU lowering)
                let relu_zero = if is_zero_const(&k.exprs[*b as usize]) {
                    Some(true)
                } else if is_zero_const(&k.exprs[*a as usize]) {
                    Some(false)
                } else {
                    None
                };
                let av = self.eval(*a, vector, j, memo);
                let bv = self.eval(*b, vector, j, memo);
                let operand_dt = k.types[*a as usize];
                self.binary(*op, operand_dt, av, bv, vector, relu_zero)
            }
            Expr::Select { cond, a, b } => {
                if vector && let Some(mask) = self.compare_mask(*cond, j, memo) {
                    // the comparison's lane mask selects directly (no 0 / 1 round trip)
                    let av = self.eval(*a, vector, j, memo);
                    let bv = self.eval(*b, vector, j, memo);
                    let mask =
                        if float { self.b.ins().bitcast(types::F32X4, little_endian(), mask) } else { mask };
                    self.b.ins().bitselect(mask, av, bv)
                } else {
                    self.select(*cond, *a, *b, float, vector, j, memo)
                }
            }
            Expr::Cast { to, x } => {
                let from = k.types[*x as usize];
                let xv = self.eval(*x, vector, j, memo);
                self.cast(from, *to, xv, vector)
            }
        };
        memo.insert((e, vector), v);
        v
    }

    /// `select(cond, a, b)` with `cond` a 0 / 1 value.
    #[allow(clippy::too_many_arguments)]
    fn select(
        &mut self,
        cond: ExprId,
        a: ExprId,
        b: ExprId,
        float: bool,
        vector: bool,
        j: Option<Value>,
        memo: &mut Memo,
    ) -> Value {
        let c = self.eval(cond, vector, j, memo);
        let av = self.eval(a, vector, j, memo);
        let bv = self.eval(b, vector, j, memo);
        if vector {
            let zero = self.b.ins().iconst(types::I32, 0);
            let zeros = self.b.ins().splat(types::I32X4, zero);
            let mask = self.b.ins().icmp(IntCC::NotEqual, c, zeros);
            let mask = if float { self.b.ins().bitcast(types::F32X4, little_endian(), mask) } else { mask };
            self.b.ins().bitselect(mask, av, bv)
        } else {
            self.b.ins().select(c, av, bv)
        }
    }

    /// The I32X4 lane mask of `e` when it is a comparison evaluated per lane (vector mode,
    /// ordinary lanes), the same condition [`Gen::binary`] turns into 0 / 1.
    fn compare_mask(&mut self, e: ExprId, j: Option<Value>, memo: &mut Memo) -> Option<Value> {
        let k = self.k;
        if self.group.is_some() || self.invariant[e as usize] {
            return None;
        }
        let Expr::Binary { op, a, b } = k.exprs[e as usize] else { return None };
        let float = k.types[a as usize] == DType::F32;
        let (fcc, icc) = match op {
            BinaryOp::Eq => (FloatCC::Equal, IntCC::Equal),
            BinaryOp::Ne => (FloatCC::NotEqual, IntCC::NotEqual),
            BinaryOp::Lt => (FloatCC::LessThan, IntCC::SignedLessThan),
            BinaryOp::Le => (FloatCC::LessThanOrEqual, IntCC::SignedLessThanOrEqual),
            BinaryOp::Gt => (FloatCC::GreaterThan, IntCC::SignedGreaterThan),
            BinaryOp::Ge => (FloatCC::GreaterThanOrEqual, IntCC::SignedGreaterThanOrEqual),
            _ => return None,
        };
        if !float && k.types[a as usize] != DType::I32 {
            return None;
        }
        let av = self.eval(a, true, j, memo);
        let bv = self.eval(b, true, j, memo);
        let m = if float { self.b.ins().fcmp(fcc, av, bv) } else { self.b.ins().icmp(icc, av, bv) };
        let ty = self.b.func.dfg.value_type(m);
        Some(if ty == types::I32X4 { m } else { self.b.ins().bitcast(types::I32X4, little_endian(), m) })
    }

    /// The i32 value of an affine index at `j` (lane `l` of a vector at `j + l`).
    fn index_value(&mut self, e: ExprId, inner: i64, vector: bool, j: Option<Value>) -> Value {
        let base = self.row_expr[&e];
        let base32 = self.b.ins().ireduce(types::I32, base);
        let at = match j {
            None => base32,
            Some(j) => {
                let j32 = self.b.ins().ireduce(types::I32, j);
                let step = self.b.ins().imul_imm_s(j32, inner);
                self.b.ins().iadd(base32, step)
            }
        };
        if !vector {
            return at;
        }
        let s = self.b.ins().splat(types::I32X4, at);
        if j.is_none() || inner == 0 {
            return s;
        }
        // lane l at j + l: the offsets [0, inner, 2 inner, 3 inner] are a constant-pool load
        // (wrapping, as the i32 arithmetic of the scalar path)
        let bytes: Vec<u8> = (0..4i32).flat_map(|l| l.wrapping_mul(inner as i32).to_le_bytes()).collect();
        let handle = self.b.func.dfg.constants.insert(ConstantData::from(bytes));
        let lane_off = self.b.ins().vconst(types::I32X4, handle);
        self.b.ins().iadd(s, lane_off)
    }

    /// `ir::random_mix32` ("lowbias32") on i32 lanes.
    fn mix32(&mut self, x: Value, vector: bool) -> Value {
        let ity = clif_type(false, vector);
        let mul = |g: &mut Self, x: Value, m: u32| {
            let c = g.b.ins().iconst(types::I32, m as i32 as i64);
            let c = if vector { g.b.ins().splat(ity, c) } else { c };
            g.b.ins().imul(x, c)
        };
        let s = self.b.ins().ushr_imm_u(x, 16);
        let x = self.b.ins().bxor(x, s);
        let x = mul(self, x, 0x7feb_352d);
        let s = self.b.ins().ushr_imm_u(x, 15);
        let x = self.b.ins().bxor(x, s);
        let x = mul(self, x, 0x846c_a68b);
        let s = self.b.ins().ushr_imm_u(x, 16);
        self.b.ins().bxor(x, s)
    }

    fn unary(&mut self, op: UnaryOp, dt: DType, x: Value, vector: bool) -> Value {
        let float = dt == DType::F32;
        let ty = clif_type(float, vector);
        match op {
            UnaryOp::Neg => {
                if float {
                    self.b.ins().fneg(x)
                } else {
                    self.b.ins().ineg(x)
                }
            }
            UnaryOp::Abs => {
                if float {
                    self.b.ins().fabs(x)
                } else {
                    self.b.ins().iabs(x)
                }
            }
            UnaryOp::Sqrt => self.b.ins().sqrt(x),
            UnaryOp::Rsqrt => {
                let s = self.b.ins().sqrt(x);
                let one = self.one_f32(ty);
                self.b.ins().fdiv(one, s)
            }
            UnaryOp::Recip => {
                let one = self.one_f32(ty);
                self.b.ins().fdiv(one, x)
            }
            UnaryOp::Floor => self.b.ins().floor(x),
            UnaryOp::Not => {
                let one = self.b.ins().iconst(types::I32, 1);
                let one = if vector { self.b.ins().splat(ty, one) } else { one };
                self.b.ins().bxor(x, one)
            }
            _ => {
                debug_assert!(math::is_inline(op), "{op:?} has an arm above");
                math::emit_unary(self.b, op, x)
            }
        }
    }

    fn one_f32(&mut self, ty: Type) -> Value {
        let one = self.b.ins().f32const(1.0);
        if ty.is_vector() { self.b.ins().splat(ty, one) } else { one }
    }

    fn binary(
        &mut self,
        op: BinaryOp,
        dt: DType,
        a: Value,
        b: Value,
        vector: bool,
        relu_zero: Option<bool>,
    ) -> Value {
        let float = dt == DType::F32;
        if float {
            let fcc = |g: &mut Self, cc: FloatCC| {
                let c = g.b.ins().fcmp(cc, a, b);
                g.bool_from_cmp(c, vector)
            };
            match op {
                BinaryOp::Add => self.b.ins().fadd(a, b),
                BinaryOp::Sub => self.b.ins().fsub(a, b),
                BinaryOp::Mul => self.b.ins().fmul(a, b),
                BinaryOp::Div => self.b.ins().fdiv(a, b),
                BinaryOp::Rem => emit_call(self.b, scalar_calls::rem_f32_fn(), &[a, b]),
                BinaryOp::Pow => math::emit_pow(self.b, a, b),
                BinaryOp::Max if relu_zero.is_some() => {
                    // max(x, 0) without fmax's ~10-instruction NaN/zero-sign expansion: take x
                    // where 0 < x or x is NaN, else the zero operand (max(-0, +0) is +0).
                    let (x, zero) = if relu_zero == Some(true) { (a, b) } else { (b, a) };
                    let gt = self.b.ins().fcmp(FloatCC::LessThan, zero, x);
                    let nan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
                    let m = self.b.ins().bor(gt, nan);
                    if vector {
                        let m = self.b.ins().bitcast(types::F32X4, little_endian(), m);
                        self.b.ins().bitselect(m, x, zero)
                    } else {
                        self.b.ins().select(m, x, zero)
                    }
                }
                BinaryOp::Max => self.b.ins().fmax(a, b),
                BinaryOp::Min => self.b.ins().fmin(a, b),
                BinaryOp::Eq => fcc(self, FloatCC::Equal),
                BinaryOp::Ne => fcc(self, FloatCC::NotEqual),
                BinaryOp::Lt => fcc(self, FloatCC::LessThan),
                BinaryOp::Le => fcc(self, FloatCC::LessThanOrEqual),
                BinaryOp::Gt => fcc(self, FloatCC::GreaterThan),
                BinaryOp::Ge => fcc(self, FloatCC::GreaterThanOrEqual),
                BinaryOp::And => self.b.ins().band(a, b),
                BinaryOp::Or => self.b.ins().bor(a, b),
            }
        } else {
            let icc = |g: &mut Self, cc: IntCC| {
                let c = g.b.ins().icmp(cc, a, b);
                g.bool_from_cmp(c, vector)
            };
            match op {
                BinaryOp::Add => self.b.ins().iadd(a, b),
                BinaryOp::Sub => self.b.ins().isub(a, b),
                BinaryOp::Mul => self.b.ins().imul(a, b),
                BinaryOp::Div => emit_call(self.b, scalar_calls::div_i32_fn(), &[a, b]),
                BinaryOp::Rem => emit_call(self.b, scalar_calls::rem_i32_fn(), &[a, b]),
                BinaryOp::Pow => unreachable!("pow is float-only (checked by the type rules)"),
                BinaryOp::Max => self.b.ins().smax(a, b),
                BinaryOp::Min => self.b.ins().smin(a, b),
                BinaryOp::Eq => icc(self, IntCC::Equal),
                BinaryOp::Ne => icc(self, IntCC::NotEqual),
                BinaryOp::Lt => icc(self, IntCC::SignedLessThan),
                BinaryOp::Le => icc(self, IntCC::SignedLessThanOrEqual),
                BinaryOp::Gt => icc(self, IntCC::SignedGreaterThan),
                BinaryOp::Ge => icc(self, IntCC::SignedGreaterThanOrEqual),
                BinaryOp::And => self.b.ins().band(a, b),
                BinaryOp::Or => self.b.ins().bor(a, b),
            }
        }
    }

    fn cast(&mut self, from: DType, to: DType, x: Value, vector: bool) -> Value {
        let ity = clif_type(false, vector);
        let fty = clif_type(true, vector);
        match (from, to) {
            (DType::F32, DType::F32) | (DType::I32, DType::I32) | (DType::Bool, DType::Bool) => x,
            (DType::Bool, DType::I32) => x,
            (DType::F32, DType::I32) => self.b.ins().fcvt_to_sint_sat(ity, x),
            (DType::I32 | DType::Bool, DType::F32) => self.b.ins().fcvt_from_sint(fty, x),
            (DType::F32, DType::Bool) => {
                let z = self.zero(DType::F32, vector);
                let c = self.b.ins().fcmp(FloatCC::NotEqual, x, z);
                self.bool_from_cmp(c, vector)
            }
            (DType::I32, DType::Bool) => {
                let z = self.zero(DType::I32, vector);
                let c = self.b.ins().icmp(IntCC::NotEqual, x, z);
                self.bool_from_cmp(c, vector)
            }
        }
    }
}
