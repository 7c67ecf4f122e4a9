//! Joins the pieces of a copy kernel that are contiguous in both source and destination.
//!
//! The im2col of a 3x3 convolution over channels-last images is a concatenation of nine
//! windows of `c` channels: one loop over a piece of `c` elements with nine stores
//! (`fuse.rs`). The windows of one kernel row (`kx = 0, 1, 2`) are adjacent in the image and in
//! the output, so each kernel row is one copy of `3c` contiguous elements: this rewrite makes
//! the loop `3c` long with three stores. Fewer, longer rows: fewer row addresses to compute and
//! longer vector loops (the conv2 im2col of the digits CNN goes from nine 16-element copies per
//! output row to three of 48).
//!
//! Applies to kernels of one pass without reductions whose every store writes a plain load
//! (contiguous along the loop on both sides). Pieces join when, in destination order, each
//! starts exactly one loop length after the previous one in both its destination and its
//! source, with the same buffers and row strides; all runs are cut to the same length (the
//! greatest common divisor of the run lengths), so the kernel keeps one loop length. Every
//! element is copied once, as before.

use super::{Access, Expr, Kernel, LoopKernel, Split, Store, StoreSource};

/// Applies the rewrite to every loop kernel.
pub(super) fn join_contiguous_pieces(kernels: &mut [Kernel]) {
    kernels.iter_mut().filter_map(Kernel::loop_mut).for_each(join);
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn join(l: &mut LoopKernel) {
    if l.passes != 1 || !l.reductions.is_empty() || l.stores.len() < 2 || l.split != Split::Rows {
        return;
    }
    // (store index, source buffer, source access) per piece
    let mut pieces: Vec<(usize, u32, Access)> = Vec::with_capacity(l.stores.len());
    for (si, s) in l.stores.iter().enumerate() {
        let StoreSource::Elem(v) = s.source else { return };
        let Expr::Load { buf, dtype, access } = &l.exprs[v as usize] else { return };
        if s.access.inner != 1 || access.inner != 1 || *dtype != s.dtype {
            return;
        }
        pieces.push((si, *buf, access.clone()));
    }
    let n = l.inner as i64;
    let mut order: Vec<usize> = (0..pieces.len()).collect();
    order.sort_by_key(|&i| {
        let s = &l.stores[pieces[i].0];
        (s.buf, s.access.offset)
    });
    let follows = |a: usize, b: usize| {
        let (sa, sb) = (&l.stores[pieces[a].0], &l.stores[pieces[b].0]);
        let ((_, ba, pa), (_, bb, pb)) = (&pieces[a], &pieces[b]);
        sa.buf == sb.buf
            && sb.access.offset == sa.access.offset + n
            && sb.access.outer == sa.access.outer
            && ba == bb
            && pb.offset == pa.offset + n
            && pb.outer == pa.outer
    };
    // run lengths in destination order
    let mut runs = Vec::new();
    let mut len = 1;
    for w in order.windows(2) {
        if follows(w[0], w[1]) {
            len += 1;
        } else {
            runs.push(len);
            len = 1;
        }
    }
    runs.push(len);
    let r = runs.iter().fold(0, |g, &x| gcd(g, x));
    if r <= 1 {
        return;
    }
    // every r-th piece of each run starts a joined piece
    let mut heads = Vec::new();
    let mut at = 0;
    for &run in &runs {
        heads.extend(order[at..at + run].iter().step_by(r).copied());
        at += run;
    }
    let mut exprs = Vec::with_capacity(heads.len());
    let mut types = Vec::with_capacity(heads.len());
    let mut stores = Vec::with_capacity(heads.len());
    for &h in &heads {
        let (si, buf, access) = &pieces[h];
        let s = &l.stores[*si];
        stores.push(Store {
            buf: s.buf,
            dtype: s.dtype,
            access: s.access.clone(),
            source: StoreSource::Elem(exprs.len() as u32),
            pass: 0,
        });
        exprs.push(Expr::Load { buf: *buf, dtype: s.dtype, access: access.clone() });
        types.push(s.dtype);
    }
    l.exprs = exprs;
    l.types = types;
    l.stores = stores;
    l.inner *= r;
}
