//! Kernel merging in the scheduler (`sched::merge`), on the digits MLP's Adam training step:
//! each parameter's update — new first and second moments, their finiteness guards and the new
//! parameter — is one kernel that writes the parameter and both moments in place and keeps the
//! new moments in registers (no temporary of the parameter's size). The numbers themselves are
//! checked by the JIT-vs-interpreter tests and `tests/train.rs`.

use modelc::elab::Program;
use modelc::ir::{DType, TensorType};
use modelc::passes::{PipelineOptions, run_pipeline};
use modelc::sched::{BufferRole, KernelBody, StoreSource, schedule};
use modelc::train::graph::build_step_graph;
use modelc::train::{find_train_block, lower_train_block};
use std::path::Path;

#[test]
fn adam_update_is_one_kernel_per_parameter() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/digits_mlp.model");
    let prog = Program::load(&path);
    let block = find_train_block(&prog, "digits_mlp").expect("train block");
    let spec = lower_train_block(&prog, "digits_mlp").expect("train spec");
    let fields = [
        ("x".to_string(), TensorType::new(DType::F32, vec![64, 64])),
        ("y".to_string(), TensorType::new(DType::I32, vec![64])),
    ];
    let g = build_step_graph(&prog, block, &spec, &fields, None).expect("step graph");
    let g = run_pipeline(g, &PipelineOptions::default());
    let s = schedule(&g);
    assert!(s.updates.is_empty(), "every update is written in place: {:?}", s.updates);

    // the kernel that writes each parameter buffer
    let writer = |p: u32| -> Vec<usize> {
        (0..s.kernels.len())
            .filter(|&i| {
                let k = &s.kernels[i];
                let KernelBody::Loop(l) = &k.body else { return false };
                l.stores.iter().any(|st| s.buffer(k.args[st.buf as usize]).role == BufferRole::Param(p))
            })
            .collect()
    };
    let params = &s.graph.params;
    let weights: Vec<u32> =
        (0..params.len() as u32).filter(|&i| !params[i as usize].path.contains('@')).collect();
    assert_eq!(weights.len(), 6, "3 layers x (weight, bias)");
    let mut update_kernels = Vec::new();
    for &w in &weights {
        let path = &params[w as usize].path;
        let index = |suffix: &str| {
            let name = format!("{path}@adam.{suffix}");
            params.iter().position(|p| p.path == name).unwrap_or_else(|| panic!("no state {name}")) as u32
        };
        let (m, v) = (index("m"), index("v"));
        let kw = writer(w);
        assert_eq!(kw.len(), 1, "{path} is written by one kernel, got {kw:?}");
        assert_eq!(writer(m), kw, "{path}@adam.m is written by the parameter's kernel");
        assert_eq!(writer(v), kw, "{path}@adam.v is written by the parameter's kernel");
        let k = &s.kernels[kw[0]];
        let KernelBody::Loop(l) = &k.body else { unreachable!() };
        update_kernels.push((path.clone(), kw[0], l.clone()));
        let numel = params[w as usize].ty.numel();
        for st in &l.stores {
            assert!(matches!(st.source, StoreSource::Elem(_)));
            let b = s.buffer(k.args[st.buf as usize]);
            assert!(
                matches!(b.role, BufferRole::Param(_)) || b.elems < numel,
                "{path}: the update kernel stores a temporary of the parameter's size ({b:?})"
            );
        }
    }
    // parameters that share no data are not merged into one loop: the two hidden biases
    // ([256] each) are updated by two kernels with the same body, which compiles once
    let biases: Vec<_> =
        update_kernels.iter().filter(|(p, _, l)| p.ends_with("bias") && l.range() == 256).collect();
    assert_eq!(biases.len(), 2, "{:?}", update_kernels.iter().map(|u| &u.0).collect::<Vec<_>>());
    assert_ne!(biases[0].1, biases[1].1, "unrelated updates stay separate kernels");
    assert_eq!(biases[0].2, biases[1].2, "and their kernels are the same code");
}
