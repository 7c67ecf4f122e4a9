//! modelc: a declarative model-description compiler.
//!
//! A `.model` file describes modules, models, data pipelines, training runs and sweeps.
//! The pipeline is `syntax` (pest → AST) → `elab` (names, modules, shapes → graph IR) →
//! `passes` → `sched` (fusion) → `jit` (Cranelift) → `runtime`. `interp` is the reference
//! interpreter that checks the JIT. Diagnostics are data ([`diag::Diagnostic`]).
//!
//! ```
//! use modelc::{Compiled, tensor::Tensor};
//! use ndarray::ArrayD;
//!
//! let source = r#"
//! use nn
//! model Tiny(classes: int = 3) {
//!     net = MLP([4, 8, classes])
//!     fn forward(x: [B, 4]) -> [B, classes] { softmax(net(x), -1) }
//! }
//! "#;
//! let compiled = Compiled::from_source("tiny.model", source, None).expect("parses");
//! let mut model = compiled.model("Tiny", &[], &[("B", 2)], 0).expect("compiles");
//! let x = Tensor::F32(ArrayD::from_elem(vec![2, 4], 0.5));
//! let out = model.forward(&[x]).expect("runs");
//! let probs = out[0].as_f32().expect("f32 output");
//! assert_eq!(probs.shape(), &[2, 3]);
//! assert!((probs.sum() - 2.0).abs() < 1e-5); // two rows of probabilities
//!
//! // Mistakes are diagnostics with spans, not panics.
//! let bad = Compiled::from_source("bad.model", "use nn\nmodel M() { fc = Lineer(2, 2) }", None)
//!     .expect("parses");
//! let err = bad.model("M", &[], &[], 0).err().expect("does not elaborate");
//! assert!(err.to_string().contains("unknown name `Lineer`"));
//! ```

mod api;
pub mod autodiff;
pub mod bench;
pub mod data;
pub mod diag;
pub mod elab;
pub mod interp;
pub mod ir;
pub mod jit;
pub mod passes;
pub mod runtime;
pub mod sched;
pub mod source;
pub mod syntax;
pub mod tensor;
pub mod train;

pub use api::{Compiled, Error, Model};
