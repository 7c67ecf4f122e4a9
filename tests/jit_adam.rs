//! Native Adam updates (`modelc::jit::adam`): which kernels of real training steps take the path,
//! and that every vector variant gives the f32 reference's bits, which are the update's formula
//! evaluated one IEEE operation at a time. That the path changes no bit of a whole training run
//! against the generated loops is `tests/cli.rs`, `native_adam_updates_change_no_checkpoint_bit`.

use modelc::elab::Program;
use modelc::ir::{DType, TensorType};
use modelc::jit::adam::{self, Group, Plan, Slot};
use modelc::jit::vmath;
use modelc::passes::{PipelineOptions, run_pipeline};
use modelc::sched::{BufferRole, KernelBody, Schedule, schedule};
use modelc::train::graph::build_step_graph;
use modelc::train::{find_train_block, lower_train_block};
use std::path::Path;

fn step_schedule(file: &str, run: &str, fields: &[(String, TensorType)]) -> Schedule {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let prog = Program::load(&path);
    let block = find_train_block(&prog, run).expect("train block");
    let spec = lower_train_block(&prog, run).expect("train spec");
    let g = build_step_graph(&prog, block, &spec, fields, None).expect("step graph");
    schedule(&run_pipeline(g, &PipelineOptions::default()))
}

/// The parameters (by path) whose values each recognised update kernel stores, and the plans.
fn native_updates(s: &Schedule) -> Vec<(Vec<String>, Plan)> {
    let mut out = Vec::new();
    for k in &s.kernels {
        let KernelBody::Loop(l) = &k.body else { continue };
        let Some(plan) = adam::recognise(l) else { continue };
        let mut written = Vec::new();
        for st in &l.stores {
            if let BufferRole::Param(p) = s.buffer(k.args[st.buf as usize]).role {
                written.push(s.graph.params[p as usize].path.clone());
            }
        }
        out.push((written, plan));
    }
    out
}

#[test]
fn weight_updates_of_training_steps_are_recognised() {
    // the digits MLP (plain Adam): each of the three weights is one native update of the
    // weight and both moments; the biases' moments are computed by their gradients' column
    // sums, so their kernels are not this update
    let mlp = step_schedule(
        "models/digits_mlp.model",
        "digits_mlp",
        &[
            ("x".to_string(), TensorType::new(DType::F32, vec![64, 64])),
            ("y".to_string(), TensorType::new(DType::I32, vec![64])),
        ],
    );
    let found = native_updates(&mlp);
    let mut weights: Vec<String> = found
        .iter()
        .map(|(w, plan)| {
            assert_eq!(plan.groups.len(), 1);
            assert_eq!(w.len(), 3, "{w:?}");
            let g = &plan.groups[0];
            assert!(g.clip.is_none() && g.l2.is_none() && g.decay.is_none(), "plain Adam: {g:?}");
            assert!(plan.guard.is_some(), "updates are guarded");
            w.iter().find(|p| !p.contains('@')).expect("the parameter itself").clone()
        })
        .collect();
    weights.sort();
    assert_eq!(weights.len(), 3, "{weights:?}");
    assert!(weights.iter().all(|w| w.ends_with("weight")), "{weights:?}");

    // the char transformer of the training issue (AdamW with weight decay on matrices, clipping
    // at norm 1): every update is native, with the clip factor and the decoupled decay matched
    let lm = step_schedule(
        "models/austen_lm.model",
        "char_lm",
        &[
            ("x".to_string(), TensorType::new(DType::I32, vec![32, 64])),
            ("y".to_string(), TensorType::new(DType::I32, vec![32, 64])),
        ],
    );
    let found = native_updates(&lm);
    let sqrt_kernels = lm
        .kernels
        .iter()
        .filter(|k| match &k.body {
            KernelBody::Loop(l) => l.range() > 1 && format!("{:?}", l.exprs).contains("Sqrt"),
            KernelBody::MatMul(_) => false,
        })
        .count();
    assert_eq!(found.len(), sqrt_kernels, "every update kernel is recognised");
    let groups: Vec<&Group> = found.iter().flat_map(|(_, p)| &p.groups).collect();
    let trained = lm.graph.params.iter().filter(|p| p.trainable).count();
    assert_eq!(groups.len(), trained, "one group per trained parameter");
    assert!(groups.iter().all(|g| g.clip.is_some() && g.decay.is_some()), "clipping, decoupled decay");

    // L2 decay folded into clipped gradients; AdamW with biases exempt from decay
    let fields = [
        ("x".to_string(), TensorType::new(DType::F32, vec![32, 64])),
        ("y".to_string(), TensorType::new(DType::I32, vec![32])),
    ];
    let fixture = "tests/fixtures/train/adam_variants.model";
    let l2 = native_updates(&step_schedule(fixture, "adam_l2", &fields));
    let groups: Vec<&Group> = l2.iter().flat_map(|(_, p)| &p.groups).collect();
    assert!(
        !groups.is_empty() && groups.iter().all(|g| g.l2.is_some() && g.clip.is_some() && g.decay.is_none())
    );
    let w = native_updates(&step_schedule(fixture, "adamw_groups", &fields));
    let decayed = |w: &[(Vec<String>, Plan)], weight: bool| {
        w.iter().any(|(params, plan)| {
            params.iter().any(|p| p.ends_with(".weight")) == weight
                && plan.groups.iter().all(|g| g.decay.is_some())
        })
    };
    assert!(decayed(&w, true), "weights decay: {w:?}");
}

/// A small deterministic generator (xorshift) of f32 values with specials mixed in.
struct Values(u64);

impl Values {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
    /// Mostly ordinary magnitudes; sometimes zero, a subnormal, infinity or NaN.
    fn value(&mut self) -> f32 {
        let r = self.next();
        match r % 64 {
            0 => 0.0,
            1 => -0.0,
            2 => f32::from_bits(r >> 9),
            3 => f32::INFINITY,
            4 => f32::NAN,
            _ => (r as f32 / u32::MAX as f32 - 0.5) * 2f32.powi((r % 13) as i32 - 6),
        }
    }
    /// A second moment: non-negative.
    fn moment(&mut self) -> f32 {
        let v = self.value();
        if v.is_nan() { v } else { v.abs() }
    }
}

/// The update of one element, written out as the training graph builds it.
#[allow(clippy::too_many_arguments)]
fn formula(
    m: f32,
    v: f32,
    p: f32,
    gs: &[f32],
    clip: Option<f32>,
    l2: Option<f32>,
    decay: Option<f32>,
) -> [f32; 3] {
    let (b1, ob1, b2, ob2, c1, c2, eps, lr) = SCALARS;
    let mut d = gs[0];
    for g in &gs[1..] {
        d += g;
    }
    if let Some(c) = clip {
        d *= c;
    }
    if let Some(w) = l2 {
        d += p * w;
    }
    let nm = m * b1 + d * ob1;
    let nv = v * b2 + d * d * ob2;
    let mut step = nm * c1 / ((nv * c2).sqrt() + eps);
    if let Some(w) = decay {
        step += p * w;
    }
    [nm, nv, p - lr * step]
}

const SCALARS: (f32, f32, f32, f32, f32, f32, f32, f32) = (0.9, 0.1, 0.999, 0.001, 1.25, 3.5, 1e-8, 3e-3);

#[test]
fn vector_variants_match_the_formula_bit_for_bit() {
    let _ftz = modelc::runtime::FlushSubnormals::new();
    let mut vals_gen = Values(0x9e37_79b9_7f4a_7c15);
    let mut functions: Vec<(String, adam::UpdateFn)> = vec![("f32".into(), adam::update_scalar)];
    for v in vmath::supported() {
        functions.push((format!("{v:?}"), adam::function(v)));
    }
    let mut cases = 0;
    for grads in 1..=3usize {
        for options in 0..8u32 {
            for in_place in [true, false] {
                for guard in [true, false] {
                    for n in [0usize, 1, 7, 8, 15, 16, 17, 31, 33, 100, 1000] {
                        // slots: m, v, p (old), m, v, p (new), grads, scalars, flag
                        let mut slot = 0;
                        let mut next = || {
                            slot += 1;
                            slot - 1
                        };
                        let (m0, v0, p0) = (next(), next(), next());
                        let (m1, v1, p1) = if in_place { (m0, v0, p0) } else { (next(), next(), next()) };
                        let gs: Vec<usize> = (0..grads).map(|_| next()).collect();
                        let scalars: Vec<usize> = (0..11).map(|_| next()).collect();
                        let flag = next();
                        let opt = |bit: u32, s: usize| (options & bit != 0).then_some(scalars[s]);
                        let group = Group {
                            m: (m0, m1),
                            v: (v0, v1),
                            p: (p0, p1),
                            grads: gs.clone(),
                            clip: opt(1, 8),
                            l2: opt(2, 9),
                            decay: opt(4, 10),
                            beta1: scalars[0],
                            one_minus_beta1: scalars[1],
                            beta2: scalars[2],
                            one_minus_beta2: scalars[3],
                            c1: scalars[4],
                            c2: scalars[5],
                            eps: scalars[6],
                            lr: scalars[7],
                        };
                        let plan = Plan {
                            slots: (0..slot).map(|_| Slot::Scalar(0)).collect(),
                            groups: vec![group],
                            guard: Some(flag),
                        };
                        let (clip, l2, decay) = (0.5f32, 1e-2f32, 0.1f32);
                        let inputs: Vec<Vec<f32>> = (0..3 + grads)
                            .map(|a| {
                                (0..n)
                                    .map(|_| if a == 1 { vals_gen.moment() } else { vals_gen.value() })
                                    .collect()
                            })
                            .collect();
                        let expected: Vec<[f32; 3]> = (0..n)
                            .map(|i| {
                                if !guard {
                                    return [inputs[0][i], inputs[1][i], inputs[2][i]];
                                }
                                let g: Vec<f32> = (0..grads).map(|a| inputs[3 + a][i]).collect();
                                formula(
                                    inputs[0][i],
                                    inputs[1][i],
                                    inputs[2][i],
                                    &g,
                                    (options & 1 != 0).then_some(clip),
                                    (options & 2 != 0).then_some(l2),
                                    (options & 4 != 0).then_some(decay),
                                )
                            })
                            .collect();
                        for (name, f) in &functions {
                            let mut arrays = inputs.clone();
                            let mut outs = vec![vec![f32::NAN; n]; 3];
                            let mut vals = vec![0u64; slot];
                            for (i, s) in [m0, v0, p0].into_iter().enumerate() {
                                vals[s] = arrays[i].as_mut_ptr() as u64;
                            }
                            if !in_place {
                                for (i, s) in [m1, v1, p1].into_iter().enumerate() {
                                    vals[s] = outs[i].as_mut_ptr() as u64;
                                }
                            }
                            for (a, &s) in gs.iter().enumerate() {
                                vals[s] = arrays[3 + a].as_mut_ptr() as u64;
                            }
                            let (b1, ob1, b2, ob2, c1, c2, eps, lr) = SCALARS;
                            for (s, x) in
                                scalars.iter().zip([b1, ob1, b2, ob2, c1, c2, eps, lr, clip, l2, decay])
                            {
                                vals[*s] = x.to_bits() as u64;
                            }
                            vals[flag] = guard as u64;
                            // SAFETY: every slot is written; the arrays hold n elements; the
                            // variant is supported here.
                            unsafe { f(&plan, vals.as_ptr(), 0, n as i64) };
                            let got = if in_place { &arrays[..3] } else { &outs[..] };
                            for i in 0..n {
                                for (w, what) in ["m", "v", "p"].iter().enumerate() {
                                    let (x, y) = (got[w][i], expected[i][w]);
                                    // (NaN payloads are not part of the contract)
                                    assert!(
                                        x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                                        "{name}: {what}[{i}] of {n}, grads {grads}, options {options}, in place \
                                         {in_place}, guard {guard}: {x} vs {y}"
                                    );
                                }
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(cases, 1056 * functions.len(), "every case ran with every variant");
}

#[test]
fn an_element_range_updates_only_its_elements() {
    // the executor splits a flat kernel's elements between threads
    let mut functions: Vec<adam::UpdateFn> = vec![adam::update_scalar];
    functions.extend(vmath::supported().into_iter().map(adam::function));
    for f in functions {
        let n = 100;
        let (mut m, mut v, mut p, g) = (vec![1f32; n], vec![1f32; n], vec![1f32; n], vec![0.5f32; n]);
        let mut vals = [0u64; 13];
        for (s, a) in
            [m.as_mut_ptr(), v.as_mut_ptr(), p.as_mut_ptr(), g.as_ptr() as *mut f32].into_iter().enumerate()
        {
            vals[s] = a as u64;
        }
        for (s, x) in (4..12).zip([0.9f32, 0.1, 0.999, 0.001, 1.0, 1.0, 1e-8, 1e-3]) {
            vals[s] = x.to_bits() as u64;
        }
        vals[12] = 1;
        let group = Group {
            m: (0, 0),
            v: (1, 1),
            p: (2, 2),
            grads: vec![3],
            clip: None,
            l2: None,
            decay: None,
            beta1: 4,
            one_minus_beta1: 5,
            beta2: 6,
            one_minus_beta2: 7,
            c1: 8,
            c2: 9,
            eps: 10,
            lr: 11,
        };
        let plan = Plan { slots: vec![Slot::Scalar(0); 13], groups: vec![group], guard: Some(12) };
        // SAFETY: as above.
        unsafe { f(&plan, vals.as_ptr(), 19, 77) };
        for i in 0..n {
            let inside = (19..77).contains(&i);
            assert_eq!(p[i] != 1.0, inside, "p[{i}]");
            assert_eq!(m[i] != 1.0, inside, "m[{i}]");
        }
    }
}
