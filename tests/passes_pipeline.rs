//! The graph passes: each rewrite rule on a tiny graph (checked through the printed IR and
//! the verifier), the pipeline's bookkeeping, and a differential check that the whole
//! pipeline leaves the interpreter's results unchanged on random graphs.

use modelc::interp::{Value, run_f64};
use modelc::ir::{
    BinaryOp, DType, Graph, Init, NodeId, Op, ParamInfo, ReduceOp, TensorType, UnaryOp, print_graph, verify,
};
use modelc::passes::{self, PASSES, PipelineOptions, cse, dce, fold, run_pipeline, simplify};
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn opts() -> PipelineOptions {
    PipelineOptions { max_rounds: 8, verify: true }
}

/// Runs a pass, checks the verifier, and returns the new graph.
fn apply(pass: fn(&Graph) -> Graph, g: &Graph) -> Graph {
    let out = pass(g);
    if let Err(e) = verify(&out) {
        panic!("invalid graph after pass:\n{}\n{}", e.join("\n"), print_graph(&out));
    }
    out
}

/// The op lines of the printed graph (`%3: f32[2] = neg %1`), without the header and tables.
fn node_lines(g: &Graph) -> Vec<String> {
    print_graph(g).lines().filter(|l| l.trim_start().starts_with('%')).map(|l| l.trim().to_string()).collect()
}

fn f32_input(g: &mut Graph, name: &str, shape: &[usize]) -> NodeId {
    g.add_input(name, TensorType::f32(shape.to_vec()), None)
}

/// simplify then dce: what a rule leaves behind once bypassed nodes are gone.
fn simplified(g: &Graph) -> Graph {
    apply(dce, &apply(simplify, g))
}

// ---------------------------------------------------------------- fold

#[test]
fn fold_evaluates_elementwise_ops_on_splats() {
    let mut g = Graph::new("fold");
    let ty = TensorType::f32(vec![2, 3]);
    let a = g.constant(2.0, ty.clone());
    let b = g.constant(3.0, ty.clone());
    let s = g.binary(BinaryOp::Mul, a, b);
    let e = g.unary(UnaryOp::Neg, s);
    let c = g.cast(e, DType::I32);
    let x = f32_input(&mut g, "x", &[2, 3]);
    let y = g.binary(BinaryOp::Add, x, e);
    g.add_output("y", y);
    g.add_output("c", c);
    let out = apply(dce, &apply(fold, &g));
    assert_eq!(
        node_lines(&out),
        [
            "%0: f32[2, 3] = const -6",
            "%1: i32[2, 3] = const -6",
            "%2: f32[2, 3] = input 0",
            "%3: f32[2, 3] = add %2, %0"
        ]
    );
}

#[test]
fn fold_moves_splats_through_layout_ops_and_keeps_non_splats() {
    let mut g = Graph::new("fold_layout");
    let c = g.constant(1.5, TensorType::f32(vec![2, 1]));
    let r = g.reshape(c, vec![1, 2]);
    let b = g.broadcast_to(r, &[4, 2]).expect("valid broadcast");
    let p = g.add(Op::Permute { perm: vec![1, 0] }, &[b], None);
    let s = g.add(Op::Slice { axis: 1, start: 0, end: 4, step: 2 }, &[p], None);
    let padded = g.add(Op::Pad { axis: 0, lo: 1, hi: 0, interior: 0 }, &[s], None);
    let zero = g.constant(0.0, TensorType::f32(vec![2, 2]));
    let zero_padded = g.add(Op::Pad { axis: 0, lo: 1, hi: 1, interior: 1 }, &[zero], None);
    let mx = g.reduce(ReduceOp::Max, s, vec![1]);
    let sum = g.reduce(ReduceOp::Sum, s, vec![1]);
    let am = g.add(Op::ArgMax { axis: 0 }, &[s], None);
    for (name, n) in [("s", s), ("padded", padded), ("zp", zero_padded), ("mx", mx), ("sum", sum), ("am", am)]
    {
        g.add_output(name, n);
    }
    let out = apply(dce, &apply(fold, &g));
    let lines = node_lines(&out);
    assert!(lines.contains(&"%0: f32[2, 2] = const 1.5".to_string()), "{lines:#?}");
    // A nonzero splat padded with zeros is not a splat: the pad stays.
    assert!(lines.iter().any(|l| l.contains("= pad[axis=0, lo=1, hi=0]")), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l == "%3: f32[5, 2] = const 0" || l.ends_with("f32[5, 2] = const 0")),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.ends_with("f32[2, 1] = const 1.5")), "max of a splat: {lines:#?}");
    assert!(lines.iter().any(|l| l.contains("reduce_sum")), "sums are not folded: {lines:#?}");
    assert!(lines.iter().any(|l| l.ends_with("i32[1, 2] = const 0")), "argmax of a splat: {lines:#?}");
}

#[test]
fn fold_uses_the_interpreter_semantics() {
    let mut g = Graph::new("fold_int");
    let ty = TensorType::new(DType::I32, vec![]);
    let a = g.constant(-7.0, ty.clone());
    let b = g.constant(2.0, ty.clone());
    let z = g.constant(0.0, ty);
    let q = g.binary(BinaryOp::Div, a, b);
    let r = g.binary(BinaryOp::Rem, a, b);
    let q0 = g.binary(BinaryOp::Div, a, z);
    let lt = g.binary(BinaryOp::Lt, a, b);
    for (n, id) in [("q", q), ("r", r), ("q0", q0), ("lt", lt)] {
        g.add_output(n, id);
    }
    let out = apply(dce, &apply(fold, &g));
    let lines = node_lines(&out);
    assert!(lines.iter().any(|l| l.ends_with("i32[] = const -4")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.ends_with("i32[] = const 1")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.ends_with("i32[] = const 0")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.ends_with("bool[] = const 1")), "{lines:#?}");
}

// ---------------------------------------------------------------- cse

#[test]
fn cse_merges_equal_nodes_and_commuted_operands() {
    let mut g = Graph::new("cse");
    let x = f32_input(&mut g, "x", &[3]);
    let y = f32_input(&mut g, "y", &[3]);
    let a1 = g.binary(BinaryOp::Add, x, y);
    let a2 = g.binary(BinaryOp::Add, y, x);
    let s1 = g.binary(BinaryOp::Sub, x, y);
    let s2 = g.binary(BinaryOp::Sub, y, x);
    let e1 = g.unary(UnaryOp::Exp, a1);
    let e2 = g.unary(UnaryOp::Exp, a2);
    for (n, id) in [("e1", e1), ("e2", e2), ("s1", s1), ("s2", s2)] {
        g.add_output(n, id);
    }
    let out = apply(dce, &apply(cse, &g));
    let ops: Vec<&Op> = out.nodes.iter().map(|n| &n.op).collect();
    assert_eq!(ops.iter().filter(|o| ***o == Op::Binary(BinaryOp::Add)).count(), 1);
    assert_eq!(ops.iter().filter(|o| ***o == Op::Unary(UnaryOp::Exp)).count(), 1);
    assert_eq!(ops.iter().filter(|o| ***o == Op::Binary(BinaryOp::Sub)).count(), 2, "sub is not commutative");
    assert_eq!(out.outputs[0].node, out.outputs[1].node);
}

#[test]
fn cse_keeps_random_streams_apart_and_merges_equal_ones() {
    let mut g = Graph::new("rng");
    let key = g.add_input("key", TensorType::new(DType::I32, vec![]), None);
    let ty = TensorType::f32(vec![4]);
    let r0 = g.add(Op::RandomUniform { stream: 0 }, &[key], Some(ty.clone()));
    let r0b = g.add(Op::RandomUniform { stream: 0 }, &[key], Some(ty.clone()));
    let r1 = g.add(Op::RandomUniform { stream: 1 }, &[key], Some(ty));
    for (n, id) in [("a", r0), ("b", r0b), ("c", r1)] {
        g.add_output(n, id);
    }
    let out = apply(cse, &g);
    assert_eq!(out.outputs[0].node, out.outputs[1].node);
    assert_ne!(out.outputs[0].node, out.outputs[2].node);
}

#[test]
fn cse_tells_signed_zero_constants_apart() {
    let mut g = Graph::new("zeros");
    let ty = TensorType::f32(vec![]);
    let p = g.constant(0.0, ty.clone());
    let n = g.constant(-0.0, ty);
    g.add_output("p", p);
    g.add_output("n", n);
    let out = apply(cse, &g);
    assert_ne!(out.outputs[0].node, out.outputs[1].node);
}

// ---------------------------------------------------------------- dce

#[test]
fn dce_keeps_tables_and_drops_unused_nodes_and_params() {
    let mut g = Graph::new("dce");
    let x = f32_input(&mut g, "x", &[2]);
    let _unused_input = f32_input(&mut g, "unused", &[2]);
    let p = g.add_param(ParamInfo {
        path: "w".into(),
        ty: TensorType::f32(vec![2]),
        init: Init::Ones,
        trainable: true,
        span: None,
    });
    let q = g.add_param(ParamInfo {
        path: "running".into(),
        ty: TensorType::f32(vec![2]),
        init: Init::Zeros,
        trainable: false,
        span: None,
    });
    let pn = g.param_node(p);
    let qn = g.param_node(q);
    let dead = g.binary(BinaryOp::Mul, x, pn);
    let _dead2 = g.unary(UnaryOp::Exp, dead);
    let upd = g.binary(BinaryOp::Add, qn, x);
    g.updates.push((q, upd));
    g.add_output("x", x);
    let out = apply(dce, &g);
    assert_eq!(out.inputs.len(), 2);
    assert_eq!(out.params.len(), 2);
    assert_eq!(node_lines(&out), ["%0: f32[2] = input 0", "%1: f32[2] = param 1", "%2: f32[2] = add %1, %0"]);
    assert_eq!(out.updates, vec![(q, NodeId(2))]);
}

#[test]
fn passes_keep_spans_and_scopes() {
    use modelc::source::{FileId, Span};
    let mut g = Graph::new("scoped");
    let x = f32_input(&mut g, "x", &[2]);
    let scope = g.scope("blocks.0.ffn");
    g.current_scope = scope;
    g.current_span = Some(Span::new(FileId(0), 10, 20));
    let dead = g.unary(UnaryOp::Exp, x);
    let y = g.unary(UnaryOp::Tanh, x);
    let _ = dead;
    g.add_output("y", y);
    let out = passes::run_pipeline(g, &opts());
    let tanh = out.outputs[0].node;
    assert_eq!(out.scope_path(tanh), "blocks.0.ffn");
    assert_eq!(out.span(tanh), Some(Span::new(FileId(0), 10, 20)));
    assert!(print_graph(&out).contains("# blocks.0.ffn"));
}

// ---------------------------------------------------------------- simplify

/// A graph `y = f(x)` for an input of `shape`; returns the simplified node lines.
fn simplify_unary_chain(shape: &[usize], build: impl FnOnce(&mut Graph, NodeId) -> NodeId) -> Vec<String> {
    let mut g = Graph::new("rule");
    let x = f32_input(&mut g, "x", shape);
    let y = build(&mut g, x);
    g.add_output("y", y);
    node_lines(&simplified(&g))
}

#[test]
fn arithmetic_identities() {
    let only_input = ["%0: f32[3] = input 0"];
    let with_const = |value: f64, op: BinaryOp, const_first: bool| {
        simplify_unary_chain(&[3], |g, x| {
            let c = g.constant(value, TensorType::f32(vec![3]));
            if const_first { g.binary(op, c, x) } else { g.binary(op, x, c) }
        })
    };
    assert_eq!(with_const(1.0, BinaryOp::Mul, false), only_input, "x*1");
    assert_eq!(with_const(1.0, BinaryOp::Mul, true), only_input, "1*x");
    assert_eq!(with_const(0.0, BinaryOp::Add, false), only_input, "x+0");
    assert_eq!(with_const(0.0, BinaryOp::Add, true), only_input, "0+x");
    assert_eq!(with_const(0.0, BinaryOp::Sub, false), only_input, "x-0");
    assert_eq!(with_const(1.0, BinaryOp::Div, false), only_input, "x/1");
    // Not identities: 0-x, 1/x, x*2.
    assert_eq!(with_const(0.0, BinaryOp::Sub, true).len(), 3);
    assert_eq!(with_const(1.0, BinaryOp::Div, true).len(), 3);
    assert_eq!(with_const(2.0, BinaryOp::Mul, false).len(), 3);
    let nnn = simplify_unary_chain(&[3], |g, x| {
        let a = g.unary(UnaryOp::Neg, x);
        let b = g.unary(UnaryOp::Neg, a);
        g.unary(UnaryOp::Neg, b)
    });
    assert_eq!(nnn, ["%0: f32[3] = input 0", "%1: f32[3] = neg %0"]);
    let cast = simplify_unary_chain(&[3], |g, x| g.add(Op::Cast { to: DType::F32 }, &[x], None));
    assert_eq!(cast, only_input);
}

#[test]
fn selects_with_known_conditions_or_equal_branches() {
    let pick = |cond: f64, same: bool| {
        let mut g = Graph::new("select");
        let a = f32_input(&mut g, "a", &[3]);
        let b = f32_input(&mut g, "b", &[3]);
        let c = g.constant(cond, TensorType::new(DType::Bool, vec![3]));
        let y = g.add(Op::Select, &[c, a, if same { a } else { b }], None);
        g.add_output("y", y);
        let out = simplified(&g);
        (out.len(), out.node(out.outputs[0].node).op.clone())
    };
    assert_eq!(pick(1.0, false), (1, Op::Input { index: 0 }));
    assert_eq!(pick(0.0, false), (1, Op::Input { index: 1 }));
    let mut g = Graph::new("select_same");
    let a = f32_input(&mut g, "a", &[3]);
    let c = g.add_input("c", TensorType::new(DType::Bool, vec![3]), None);
    let y = g.add(Op::Select, &[c, a, a], None);
    g.add_output("y", y);
    assert_eq!(node_lines(&simplified(&g)), ["%0: f32[3] = input 0"]);
}

#[test]
fn permutes_compose_and_identities_vanish() {
    let two = simplify_unary_chain(&[2, 3, 4], |g, x| {
        let a = g.add(Op::Permute { perm: vec![2, 0, 1] }, &[x], None);
        g.add(Op::Permute { perm: vec![0, 2, 1] }, &[a], None)
    });
    // [2,3,4] -> [4,2,3] -> [4,3,2]: one permute [2,1,0].
    assert_eq!(two, ["%0: f32[2, 3, 4] = input 0", "%1: f32[4, 3, 2] = permute[2,1,0] %0"]);
    let inverse = simplify_unary_chain(&[2, 3, 4], |g, x| {
        let a = g.add(Op::Permute { perm: vec![2, 0, 1] }, &[x], None);
        g.add(Op::Permute { perm: vec![1, 2, 0] }, &[a], None)
    });
    assert_eq!(inverse, ["%0: f32[2, 3, 4] = input 0"]);
    let identity = simplify_unary_chain(&[2, 3], |g, x| g.add(Op::Permute { perm: vec![0, 1] }, &[x], None));
    assert_eq!(identity, ["%0: f32[2, 3] = input 0"]);
}

#[test]
fn reshapes_broadcasts_slices_pads_collapse() {
    let rr = simplify_unary_chain(&[2, 6], |g, x| {
        let a = g.add(Op::Reshape, &[x], Some(TensorType::f32(vec![3, 4])));
        g.add(Op::Reshape, &[a], Some(TensorType::f32(vec![12])))
    });
    assert_eq!(rr, ["%0: f32[2, 6] = input 0", "%1: f32[12] = reshape %0"]);
    let back = simplify_unary_chain(&[2, 6], |g, x| {
        let a = g.add(Op::Reshape, &[x], Some(TensorType::f32(vec![12])));
        g.add(Op::Reshape, &[a], Some(TensorType::f32(vec![2, 6])))
    });
    assert_eq!(back, ["%0: f32[2, 6] = input 0"]);
    let bb = simplify_unary_chain(&[1, 1], |g, x| {
        let a = g.add(Op::Broadcast, &[x], Some(TensorType::f32(vec![3, 1])));
        g.add(Op::Broadcast, &[a], Some(TensorType::f32(vec![3, 5])))
    });
    assert_eq!(bb, ["%0: f32[1, 1] = input 0", "%1: f32[3, 5] = broadcast %0"]);
    let same =
        simplify_unary_chain(&[3, 5], |g, x| g.add(Op::Broadcast, &[x], Some(TensorType::f32(vec![3, 5]))));
    assert_eq!(same, ["%0: f32[3, 5] = input 0"]);
    let slice = simplify_unary_chain(&[3, 5], |g, x| {
        g.add(Op::Slice { axis: 1, start: 0, end: 5, step: 1 }, &[x], None)
    });
    assert_eq!(slice, ["%0: f32[3, 5] = input 0"]);
    let real_slice = simplify_unary_chain(&[3, 5], |g, x| {
        g.add(Op::Slice { axis: 1, start: 0, end: 5, step: 2 }, &[x], None)
    });
    assert_eq!(real_slice.len(), 2);
    let pad =
        simplify_unary_chain(&[3], |g, x| g.add(Op::Pad { axis: 0, lo: 0, hi: 0, interior: 0 }, &[x], None));
    assert_eq!(pad, ["%0: f32[3] = input 0"]);
    let concat = simplify_unary_chain(&[3], |g, x| g.add(Op::Concat { axis: 0 }, &[x], None));
    assert_eq!(concat, ["%0: f32[3] = input 0"]);
    let reduce = simplify_unary_chain(&[3], |g, x| g.reduce(ReduceOp::Sum, x, vec![]));
    assert_eq!(reduce, ["%0: f32[3] = input 0"]);
}

#[test]
fn transposes_fold_into_matmul() {
    let mut g = Graph::new("mm");
    let a = f32_input(&mut g, "a", &[2, 5, 3]);
    let b = f32_input(&mut g, "b", &[2, 4, 5]);
    let at = g.add(Op::Permute { perm: vec![0, 2, 1] }, &[a], None);
    let bt = g.add(Op::Permute { perm: vec![0, 2, 1] }, &[b], None);
    let y = g.add(Op::MatMul { trans_a: false, trans_b: false }, &[at, bt], None);
    // A transpose of a transposed read cancels: matmul[ta](swap(c)) == matmul(c).
    let c = f32_input(&mut g, "c", &[2, 3, 5]);
    let ct = g.add(Op::Permute { perm: vec![0, 2, 1] }, &[c], None);
    let z = g.add(Op::MatMul { trans_a: true, trans_b: false }, &[ct, bt], None);
    // Not a swap of the last two axes: left alone.
    let d = f32_input(&mut g, "d", &[3, 2, 5]);
    let dp = g.add(Op::Permute { perm: vec![1, 0, 2] }, &[d], None);
    let w = g.add(Op::MatMul { trans_a: false, trans_b: true }, &[dp, b], None);
    g.add_output("y", y);
    g.add_output("z", z);
    g.add_output("w", w);
    assert_eq!(
        node_lines(&simplified(&g)),
        [
            "%0: f32[2, 5, 3] = input 0",
            "%1: f32[2, 4, 5] = input 1",
            "%2: f32[2, 3, 4] = matmul[ta, tb] %0, %1",
            "%3: f32[2, 3, 5] = input 2",
            "%4: f32[2, 3, 4] = matmul[tb] %3, %1",
            "%5: f32[3, 2, 5] = input 3",
            "%6: f32[2, 3, 5] = permute[1,0,2] %5",
            "%7: f32[2, 3, 4] = matmul[tb] %6, %1",
        ]
    );
}

// ---------------------------------------------------------------- pipeline

#[test]
fn pipeline_lists_passes_and_runs_up_to_a_name() {
    let names: Vec<&str> = PASSES.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["fold", "simplify", "cse", "permute", "dce"]);
    let mut g = Graph::new("until");
    let x = f32_input(&mut g, "x", &[2]);
    let one = g.constant(1.0, TensorType::f32(vec![2]));
    let y = g.binary(BinaryOp::Mul, x, one);
    g.add_output("y", y);
    let after_fold = passes::run_until(g.clone(), "fold", &opts()).expect("known pass");
    assert_eq!(after_fold.len(), 3);
    let after_simplify = passes::run_until(g.clone(), "simplify", &opts()).expect("known pass");
    assert_eq!(after_simplify.outputs[0].node, NodeId(0));
    let after_dce = passes::run_until(g.clone(), "dce", &opts()).expect("known pass");
    assert_eq!(node_lines(&after_dce), ["%0: f32[2] = input 0"]);
    let err = passes::run_until(g.clone(), "inline", &opts()).unwrap_err();
    assert_eq!(err.to_string(), "unknown pass `inline`; the passes are fold, simplify, cse, permute, dce");
    let mut seen = Vec::new();
    let _ =
        passes::run_pipeline_observed(g, &opts(), &mut |name, round, _| seen.push((name.to_string(), round)));
    // Round 0 changes the graph, round 1 finds nothing more and stops.
    assert_eq!(seen.len(), 10);
    assert_eq!(seen[5], ("fold".to_string(), 1));
}

// ---------------------------------------------------------------- differential

/// A random graph of f32 elementwise / reshape / permute / broadcast / matmul / reduce
/// chains, seeded with the patterns the rules look for (splat constants, double negations,
/// permute chains, transposed matmul operands).
struct RandomGraph {
    g: Graph,
    /// Nodes usable as operands, all f32.
    pool: Vec<NodeId>,
}

impl RandomGraph {
    fn new(rng: &mut ChaCha8Rng) -> RandomGraph {
        let mut g = Graph::new("random");
        let mut pool = Vec::new();
        for i in 0..rng.random_range(1..=3) {
            let shape = random_shape(rng);
            pool.push(f32_input(&mut g, &format!("x{i}"), &shape));
        }
        RandomGraph { g, pool }
    }

    fn pick(&self, rng: &mut ChaCha8Rng) -> NodeId {
        // Prefer recent nodes so chains grow deep.
        let n = self.pool.len();
        let lo = n.saturating_sub(4);
        if rng.random_bool(0.7) {
            self.pool[rng.random_range(lo..n)]
        } else {
            self.pool[rng.random_range(0..n)]
        }
    }

    fn fresh_input(&mut self, shape: &[usize]) -> NodeId {
        let name = format!("x{}", self.g.inputs.len());
        f32_input(&mut self.g, &name, shape)
    }

    fn step(&mut self, rng: &mut ChaCha8Rng) {
        let x = self.pick(rng);
        let shape = self.g.shape(x).to_vec();
        let ty = TensorType::f32(shape.clone());
        let g = &mut self.g;
        let node = match rng.random_range(0..14) {
            0 => {
                let u =
                    [UnaryOp::Neg, UnaryOp::Tanh, UnaryOp::Sin, UnaryOp::Abs, UnaryOp::Sigmoid, UnaryOp::Cos];
                g.unary(u[rng.random_range(0..u.len())], x)
            }
            1 => {
                let n = g.unary(UnaryOp::Neg, x);
                g.unary(UnaryOp::Neg, n)
            }
            2 | 3 => {
                // A binary op with a same-shaped pool node, or with a splat constant.
                let same: Vec<NodeId> =
                    self.pool.iter().copied().filter(|&p| self.g.shape(p) == shape).collect();
                let g = &mut self.g;
                let other = if rng.random_bool(0.5) && same.len() > 1 {
                    same[rng.random_range(0..same.len())]
                } else {
                    let v = [0.0, 1.0, 2.5, -0.5][rng.random_range(0..4)];
                    g.constant(v, ty.clone())
                };
                let ops = [
                    BinaryOp::Add,
                    BinaryOp::Sub,
                    BinaryOp::Mul,
                    BinaryOp::Max,
                    BinaryOp::Min,
                    BinaryOp::Div,
                ];
                let op = ops[rng.random_range(0..ops.len())];
                // Divide only by constants (no division by a value near zero).
                let op = if op == BinaryOp::Div && !matches!(g.node(other).op, Op::Const { .. }) {
                    BinaryOp::Mul
                } else {
                    op
                };
                if rng.random_bool(0.5) { g.binary(op, x, other) } else { g.binary(op, other, x) }
            }
            4 => {
                // Constant arithmetic for fold: (c1 op c2) op x.
                let c1 = g.constant(1.5, ty.clone());
                let c2 = g.constant(-2.0, ty.clone());
                let c = g.binary(BinaryOp::Mul, c1, c2);
                let e = g.unary(UnaryOp::Exp, c);
                g.binary(BinaryOp::Add, x, e)
            }
            5 => {
                let mut perm: Vec<u32> = (0..shape.len() as u32).collect();
                for i in (1..perm.len()).rev() {
                    perm.swap(i, rng.random_range(0..=i));
                }
                g.add(Op::Permute { perm }, &[x], None)
            }
            6 => {
                // Reshape: flatten, or split/insert a unit axis.
                let numel: usize = shape.iter().product();
                let new_shape = match rng.random_range(0..3) {
                    0 => vec![numel],
                    1 => {
                        let mut s = vec![1];
                        s.extend(&shape);
                        s
                    }
                    _ => shape.iter().rev().copied().collect(),
                };
                g.add(Op::Reshape, &[x], Some(TensorType::f32(new_shape)))
            }
            7 => {
                // Reduce to size 1 along an axis, then broadcast back (a normalisation shape).
                if shape.is_empty() {
                    return;
                }
                let axis = rng.random_range(0..shape.len()) as u32;
                let op = [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min][rng.random_range(0..3)];
                let r = g.reduce(op, x, vec![axis]);
                let b = g.add(Op::Broadcast, &[r], Some(ty.clone()));
                g.binary(BinaryOp::Sub, x, b)
            }
            8 => {
                // Matmul with a fresh input, possibly through explicit transposes.
                if shape.len() < 2 {
                    return;
                }
                let r = shape.len();
                let n = [1usize, 3, 4][rng.random_range(0..3)];
                let mut bshape = shape[..r - 2].to_vec();
                let transpose_b = rng.random_bool(0.5);
                bshape.extend(if transpose_b { [n, shape[r - 1]] } else { [shape[r - 1], n] });
                let b = self.fresh_input(&bshape);
                let g = &mut self.g;
                let mut swap: Vec<u32> = (0..r as u32).collect();
                swap.swap(r - 2, r - 1);
                let b = if transpose_b { g.add(Op::Permute { perm: swap.clone() }, &[b], None) } else { b };
                let a = if rng.random_bool(0.5) {
                    let t = g.add(Op::Permute { perm: swap.clone() }, &[x], None);
                    g.add(Op::Permute { perm: swap }, &[t], None)
                } else {
                    x
                };
                g.add(Op::MatMul { trans_a: false, trans_b: false }, &[a, b], None)
            }
            9 => {
                if shape.is_empty() {
                    return;
                }
                let axis = rng.random_range(0..shape.len());
                let dim = shape[axis];
                let start = rng.random_range(0..dim);
                let step = rng.random_range(1..=2);
                g.add(Op::Slice { axis: axis as u32, start, end: dim, step }, &[x], None)
            }
            10 => {
                // Broadcast along a fresh unit axis: [s] -> [1, s] -> [3, s].
                let mut unit = vec![1];
                unit.extend(&shape);
                let r = g.add(Op::Reshape, &[x], Some(TensorType::f32(unit)));
                let mut wide = vec![3];
                wide.extend(&shape);
                g.add(Op::Broadcast, &[r], Some(TensorType::f32(wide)))
            }
            11 => g.add(Op::Cast { to: DType::F32 }, &[x], None),
            12 => {
                if shape.is_empty() {
                    return;
                }
                let axis = rng.random_range(0..shape.len()) as u32;
                let p = g.add(Op::Pad { axis, lo: 1, hi: 0, interior: 1 }, &[x], None);
                g.add(Op::Cumsum { axis, reverse: rng.random_bool(0.5) }, &[p], None)
            }
            _ => {
                // Duplicate work for CSE.
                let a = g.unary(UnaryOp::Tanh, x);
                let b = g.unary(UnaryOp::Tanh, x);
                g.binary(BinaryOp::Add, a, b)
            }
        };
        // Keep operands small so values stay in a well-conditioned range.
        if self.g.ty(node).numel() <= 600 {
            self.pool.push(node);
        }
    }

    fn finish(mut self, rng: &mut ChaCha8Rng) -> Graph {
        let last = *self.pool.last().expect("the pool starts with inputs");
        self.g.add_output("y", last);
        let other = self.pick(rng);
        self.g.add_output("z", other);
        self.g
    }
}

fn random_shape(rng: &mut ChaCha8Rng) -> Vec<usize> {
    let rank = rng.random_range(1..=3);
    (0..rank).map(|_| [1usize, 2, 3, 5][rng.random_range(0..4)]).collect()
}

fn random_inputs(g: &Graph, rng: &mut ChaCha8Rng) -> Vec<Value<f64>> {
    g.inputs
        .iter()
        .map(|i| {
            Value::Float(ArrayD::from_shape_simple_fn(IxDyn(&i.ty.shape), || rng.random_range(-1.0..1.0)))
        })
        .collect()
}

#[test]
fn pipeline_preserves_results_on_random_graphs() {
    let mut total_before = 0;
    let mut total_after = 0;
    for seed in 0..150u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut rg = RandomGraph::new(&mut rng);
        for _ in 0..rng.random_range(4..16) {
            rg.step(&mut rng);
        }
        let g = rg.finish(&mut rng);
        verify(&g).expect("the generator builds valid graphs");
        let inputs = random_inputs(&g, &mut rng);
        let before = run_f64(&g, &inputs, &[]).expect("runs before");
        let optimised = run_pipeline(g.clone(), &opts());
        verify(&optimised).expect("valid after the pipeline");
        assert!(optimised.len() <= g.len(), "seed {seed}: the pipeline grew the graph");
        total_before += g.len();
        total_after += optimised.len();
        let after = run_f64(&optimised, &inputs, &[]).expect("runs after");
        for ((name, a), (_, b)) in before.outputs.iter().zip(&after.outputs) {
            let (a, b) = (a.as_float().expect("f32 output"), b.as_float().expect("f32 output"));
            assert_eq!(a.shape(), b.shape(), "seed {seed} output {name}");
            for (x, y) in a.iter().zip(b.iter()) {
                let ok = x == y || (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-6 * x.abs().max(1.0);
                assert!(
                    ok,
                    "seed {seed} output {name}: {x} vs {y}\n{}\n{}",
                    print_graph(&g),
                    print_graph(&optimised)
                );
            }
        }
        // A fixed point: running the pipeline again changes nothing.
        let again = run_pipeline(optimised.clone(), &opts());
        assert_eq!(print_graph(&again), print_graph(&optimised), "seed {seed}");
    }
    // The generator plants foldable and redundant work; the pipeline must find some of it.
    assert!(total_after * 10 < total_before * 9, "{total_before} nodes before, {total_after} after");
}
