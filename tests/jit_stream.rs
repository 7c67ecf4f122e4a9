//! Flat kernels of at least `jit::stream::MIN_ELEMS` elements write their outputs through
//! streaming stores (chunks computed into a stack array, then copied out): the results equal
//! the ordinary path's element for element, with one and two outputs, at one and two threads
//! (where each thread's range starts at an unaligned element), including the tail after the
//! last whole chunk.

mod jit_support;

use jit_support::run_jit;
use modelc::ir::{BinaryOp, DType, Graph, TensorType, UnaryOp};
use modelc::jit::stream;
use modelc::sched::{KernelBody, Split, schedule};
use modelc::tensor::Tensor;
use ndarray::ArrayD;

#[test]
fn streamed_outputs_match_plain_arithmetic() {
    let n = stream::MIN_ELEMS + 3 * stream::CHUNK / 2 + 37;
    let mut g = Graph::new("stream_chain");
    let ty = TensorType::new(DType::F32, vec![n]);
    let a = g.add_input("a", ty.clone(), None);
    let b = g.add_input("b", ty.clone(), None);
    let c = g.add_input("c", ty, None);
    let ab = g.binary(BinaryOp::Mul, a, b);
    let abc = g.binary(BinaryOp::Add, ab, c);
    let y = g.unary(UnaryOp::Abs, abc);
    let z = g.binary(BinaryOp::Sub, a, c);
    g.add_output("y", y);
    g.add_output("z", z);
    let s = schedule(&g);
    let flat_long = s.kernels.iter().any(|k| match &k.body {
        KernelBody::Loop(l) => l.split == Split::Elements && l.inner >= stream::MIN_ELEMS,
        _ => false,
    });
    assert!(flat_long, "one flat kernel over every element: {}", modelc::sched::print_kernels(&s));
    let val = |i: usize, k: u32| {
        ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(k) % 2001) as f32 / 500.0 - 2.0
    };
    let arr =
        |k: u32| Tensor::F32(ArrayD::from_shape_vec(vec![n], (0..n).map(|i| val(i, k)).collect()).unwrap());
    let inputs = [arr(1), arr(7), arr(13)];
    for threads in [1, 2] {
        let out = run_jit(&g, &inputs, &[], threads);
        let (Tensor::F32(y), Tensor::F32(z)) = (&out[0], &out[1]) else { panic!("f32 outputs") };
        for i in 0..n {
            let (a, b, c) = (val(i, 1), val(i, 7), val(i, 13));
            assert_eq!(
                y.as_slice().unwrap()[i].to_bits(),
                (a * b + c).abs().to_bits(),
                "y[{i}], {threads} threads"
            );
            assert_eq!(z.as_slice().unwrap()[i].to_bits(), (a - c).to_bits(), "z[{i}], {threads} threads");
        }
    }
}
