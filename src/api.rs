//! The library API: compile a source once, build a model from it with arguments, run its
//! forward pass as Cranelift-compiled code on ndarray tensors. Errors are values: diagnostics
//! with spans (render them with [`crate::diag::render_all`]) or run-time errors.

use crate::diag::{Diagnostic, Diagnostics};
use crate::elab::value::Value;
use crate::elab::{ElabOptions, Program, elaborate_model};
use crate::ir::Graph;
use crate::passes::{PipelineOptions, run_pipeline};
use crate::runtime::{ExecOptions, Executable, RuntimeError};
use crate::tensor::Tensor;
use std::fmt;
use std::path::Path;

/// Why compiling or running failed.
#[derive(Debug)]
pub enum Error {
    /// Problems in the source, with spans into [`Compiled::program`]'s sources.
    Diagnostics(Diagnostics),
    /// A problem at run time: inputs or weights that do not fit, a kernel that failed.
    Runtime(RuntimeError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Diagnostics(d) => write!(f, "{d}"),
            Error::Runtime(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<RuntimeError> for Error {
    fn from(e: RuntimeError) -> Error {
        Error::Runtime(e)
    }
}

/// A parsed and loaded program (a `.model` file and what it uses).
#[derive(Debug)]
pub struct Compiled {
    pub program: Program,
}

impl Compiled {
    /// Compiles source text; relative `use` paths resolve against `base_dir`.
    pub fn from_source(name: &str, text: &str, base_dir: Option<&Path>) -> Result<Compiled, Error> {
        Self::checked(Program::from_source(name, text, base_dir))
    }

    /// Compiles a file from disk.
    pub fn from_file(path: &Path) -> Result<Compiled, Error> {
        Self::checked(Program::load(path))
    }

    fn checked(program: Program) -> Result<Compiled, Error> {
        if program.diagnostics.iter().any(Diagnostic::is_error) {
            return Err(Error::Diagnostics(Diagnostics(program.diagnostics)));
        }
        Ok(Compiled { program })
    }

    /// Builds model `name` with compile-time arguments and values of symbolic dimensions,
    /// parameters initialised from `seed`.
    pub fn model(
        &self,
        name: &str,
        args: &[(&str, Value)],
        dims: &[(&str, i64)],
        seed: u64,
    ) -> Result<Model, Error> {
        let args: Vec<(String, Value)> = args.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let opts = ElabOptions {
            dims: dims.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..ElabOptions::default()
        };
        let e = elaborate_model(&self.program, name, &args, &opts)
            .map_err(|d| Error::Diagnostics(Diagnostics(d)))?;
        let graph = run_pipeline(e.graph, &PipelineOptions::default());
        let exe = Executable::new(&graph, &ExecOptions { seed, ..ExecOptions::default() })?;
        Ok(Model { exe })
    }
}

/// A compiled model ready to run.
pub struct Model {
    exe: Executable,
}

impl Model {
    /// Runs `forward`: inputs in the order of its parameters; outputs in the order it returns.
    pub fn forward(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, Error> {
        Ok(self.exe.run(inputs)?)
    }

    /// The optimised graph that was compiled.
    pub fn graph(&self) -> &Graph {
        self.exe.graph()
    }

    /// Loads parameters from a safetensors file keyed by parameter path.
    pub fn load_weights(&mut self, path: &Path) -> Result<(), Error> {
        Ok(self.exe.load_safetensors(path)?)
    }

    /// Saves parameters (atomically) to a safetensors file keyed by parameter path.
    pub fn save_weights(&self, path: &Path) -> Result<(), Error> {
        Ok(self.exe.save_safetensors(path)?)
    }

    /// The current parameter values, in `graph().params` order.
    pub fn params(&self) -> Vec<Tensor> {
        self.exe.params()
    }
}
