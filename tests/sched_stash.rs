//! The scheduler's numerator stash (`sched::stash`): a softmax row kernel stores `exp(x - max)`
//! in its sum pass and divides the stored values in its last pass, instead of evaluating the
//! mask, scale and exponential twice. Checked on a causal-masked softmax (the attention
//! pattern: iota comparison, select, scale) and a plain one, for the kernel's shape and for the
//! numbers against the reference interpreter at odd row lengths (vector tails), 1 and 2 threads.

mod jit_support;

use jit_support::check_graph;
use modelc::ir::{BinaryOp, DType, Graph, NodeId, Op, ReduceOp, TensorType, UnaryOp};
use modelc::passes::{PipelineOptions, run_pipeline};
use modelc::sched::{Expr, KernelBody, StoreSource, schedule};

/// `softmax(select(row >= col, x * 0.125, -inf))` over the last axis of `[rows, n]` (or the
/// unmasked softmax of `x * 0.125`).
fn softmax_graph(rows: usize, n: usize, causal: bool) -> Graph {
    let mut g = Graph::new(format!("softmax_{rows}x{n}_{causal}"));
    let shape = vec![rows, n];
    let ty = TensorType::new(DType::F32, shape.clone());
    let x = g.add_input("x", ty.clone(), None);
    let scale = g.constant(0.125, ty.clone());
    let mut s = g.binary(BinaryOp::Mul, x, scale);
    if causal {
        let ity = TensorType::new(DType::I32, shape.clone());
        let r = g.add(Op::Iota { axis: 0 }, &[], Some(ity.clone()));
        let c = g.add(Op::Iota { axis: 1 }, &[], Some(ity));
        let keep = g.binary(BinaryOp::Ge, r, c);
        let neg = g.constant(f64::NEG_INFINITY, ty.clone());
        s = g.add(Op::Select, &[keep, s, neg], None);
    }
    let max = g.reduce(ReduceOp::Max, s, vec![1]);
    let max = bcast(&mut g, max, &shape);
    let d = g.binary(BinaryOp::Sub, s, max);
    let e = g.unary(UnaryOp::Exp, d);
    let sum = g.reduce(ReduceOp::Sum, e, vec![1]);
    let sum = bcast(&mut g, sum, &shape);
    let y = g.binary(BinaryOp::Div, e, sum);
    g.add_output("y", y);
    g
}

/// `[rows]` (a reduced row) broadcast back over `[rows, n]`.
fn bcast(g: &mut Graph, v: NodeId, shape: &[usize]) -> NodeId {
    let col = g.reshape(v, vec![shape[0], 1]);
    g.broadcast_to(col, shape).expect("broadcast")
}

#[test]
fn softmax_stores_numerators_in_the_sum_pass() {
    for causal in [false, true] {
        let g = run_pipeline(softmax_graph(64, 64, causal), &PipelineOptions::default());
        let s = schedule(&g);
        let rows: Vec<_> = s
            .kernels
            .iter()
            .filter_map(|k| match &k.body {
                KernelBody::Loop(l) if l.passes == 3 => Some(l),
                _ => None,
            })
            .collect();
        assert_eq!(rows.len(), 1, "one three-pass row kernel (max, sum, normalise): {:#?}", s.kernels);
        let l = rows[0];
        let sum_pass =
            l.reductions.iter().find(|r| r.kind == modelc::sched::ReduceKind::Sum).expect("sum").pass;
        let stores: Vec<_> = l.stores.iter().filter(|st| matches!(st.source, StoreSource::Elem(_))).collect();
        assert_eq!(stores.len(), 2, "numerators in the sum pass, quotients in the last: {:#?}", l.stores);
        assert!(stores.iter().any(|st| st.pass == sum_pass), "a store in the sum pass");
        let last = stores.iter().find(|st| st.pass == 2).expect("a store in the last pass");
        let StoreSource::Elem(v) = last.source else { unreachable!() };
        let Expr::Binary { op: BinaryOp::Div, a, .. } = l.exprs[v as usize] else {
            panic!("last pass divides: {:?}", l.exprs[v as usize])
        };
        assert!(
            matches!(l.exprs[a as usize], Expr::Load { buf, .. } if buf == last.buf),
            "the last pass reads the stored numerators back"
        );
        // exp is evaluated in the sum pass only: the last pass needs no transcendental
        let mut stack = vec![v];
        while let Some(e) = stack.pop() {
            match &l.exprs[e as usize] {
                Expr::Unary { op, .. } => panic!("the last pass evaluates {op:?}"),
                Expr::Binary { a, b, .. } => stack.extend([*a, *b]),
                _ => {}
            }
        }
    }
}

#[test]
fn stashed_softmax_matches_reference() {
    for (c, &(rows, n)) in
        [(1usize, 1usize), (5, 3), (7, 17), (64, 64), (3, 63), (130, 33), (3, 257), (2, 300), (2, 600)]
            .iter()
            .enumerate()
    {
        for causal in [false, true] {
            let g = softmax_graph(rows, n, causal);
            check_graph(&g, &g.name.clone(), c as u64);
        }
    }
}

/// The attention softmax of a real model: AustenLM's causal attention lowers its masked, scaled
/// scores once per pass that needs them (the maximum and the numerators are separate copies of
/// the same expressions until `sched::share` makes them one), and is still stashed.
#[test]
fn model_attention_softmax_is_stashed() {
    use modelc::elab::{ElabOptions, Program, elaborate_model};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/austen_lm.model");
    let prog = Program::load(&path);
    let opts = ElabOptions { dims: vec![("B".to_string(), 1)], ..ElabOptions::default() };
    let e = elaborate_model(&prog, "AustenLM", &[], &opts).expect("elaborates");
    let g = run_pipeline(e.graph, &PipelineOptions::default());
    let s = schedule(&g);
    let mut softmaxes = 0;
    for k in &s.kernels {
        let KernelBody::Loop(l) = &k.body else { continue };
        let Some(sum) = l.reductions.iter().find(|r| r.kind == modelc::sched::ReduceKind::Sum) else {
            continue;
        };
        if l.passes != 3 || !matches!(l.exprs[sum.value as usize], Expr::Unary { op: UnaryOp::Exp, .. }) {
            continue;
        }
        softmaxes += 1;
        for st in l.stores.iter().filter(|st| st.pass == 2) {
            let StoreSource::Elem(v) = st.source else { continue };
            let mut stack = vec![v];
            while let Some(e) = stack.pop() {
                match &l.exprs[e as usize] {
                    Expr::Unary { op, .. } => panic!("the last pass evaluates {op:?}: {l:#?}"),
                    Expr::Binary { a, b, .. } => stack.extend([*a, *b]),
                    Expr::Select { cond, a, b } => stack.extend([*cond, *a, *b]),
                    _ => {}
                }
            }
        }
    }
    assert_eq!(softmaxes, 2, "one attention softmax per block: {}", modelc::sched::print_kernels(&s));
}
