//! Graph-to-graph passes: constant folding, algebraic simplification, common-subexpression
//! elimination, the layout of elementwise regions (`permute`) and dead-code elimination. Each
//! pass is a plain function `&Graph -> Graph` that builds a new graph (keeping the tables,
//! spans and scopes); [`run_pipeline`] runs them in one explicit order to a fixed point, and
//! any pass's result can be dumped by name.
//!
//! **Architecture Invariant:** a pass never changes what a graph computes: the reference
//! interpreter gives the same outputs before and after (tests check this on random graphs).

mod cse;
mod dce;
mod fold;
mod permute;
mod rebuild;
mod simplify;

pub use cse::cse;
pub use dce::dce;
pub use fold::fold;
pub use permute::permute;
pub use simplify::simplify;

use crate::ir::{Graph, print_graph, verify};
use std::fmt;

/// A pass: a function from a graph to a new graph.
pub type Pass = fn(&Graph) -> Graph;

/// The pipeline, in order: one round runs every pass once.
pub const PASSES: &[(&str, Pass)] =
    &[("fold", fold), ("simplify", simplify), ("cse", cse), ("permute", permute), ("dce", dce)];

/// How [`run_pipeline`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PipelineOptions {
    /// Rounds of the whole pipeline at most; it stops earlier at a fixed point.
    pub max_rounds: usize,
    /// Run the verifier after every pass and panic on failure (a pass bug, never a user
    /// error).
    pub verify: bool,
}

impl Default for PipelineOptions {
    fn default() -> PipelineOptions {
        PipelineOptions { max_rounds: 8, verify: cfg!(debug_assertions) }
    }
}

/// A pass name that is not in [`PASSES`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownPass(pub String);

impl fmt::Display for UnknownPass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = PASSES.iter().map(|(n, _)| *n).collect();
        write!(f, "unknown pass `{}`; the passes are {}", self.0, names.join(", "))
    }
}

impl std::error::Error for UnknownPass {}

/// The pass called `name`.
pub fn pass_by_name(name: &str) -> Option<Pass> {
    PASSES.iter().find(|(n, _)| *n == name).map(|&(_, p)| p)
}

/// Runs fold → simplify → cse → permute → dce until a round changes nothing (or `max_rounds`).
pub fn run_pipeline(g: Graph, opts: &PipelineOptions) -> Graph {
    run_pipeline_observed(g, opts, &mut |_, _, _| {})
}

/// Like [`run_pipeline`], calling `observe(pass name, round, graph)` after every pass (rounds
/// count from 0), for dumps and timings.
pub fn run_pipeline_observed(
    mut g: Graph,
    opts: &PipelineOptions,
    observe: &mut dyn FnMut(&str, usize, &Graph),
) -> Graph {
    for round in 0..opts.max_rounds {
        let before = g.clone();
        for &(name, pass) in PASSES {
            g = run_pass(name, pass, &g, opts.verify);
            observe(name, round, &g);
        }
        // a round that changed nothing would change nothing the next time either
        if same_graph(&before, &g) {
            break;
        }
    }
    g
}

/// Whether two graphs are the same program: every node (operation, arguments, type), table
/// and side table (span, scope path) equal. Types are compared by value, since each graph
/// interns its own. (Comparing the printed text did the same at a quarter of the pipeline's
/// time.) A constant that is NaN never equals itself, so a graph holding one runs the rounds
/// out (`max_rounds`) instead of stopping early, with the same result.
fn same_graph(a: &Graph, b: &Graph) -> bool {
    a.name == b.name
        && a.nodes.len() == b.nodes.len()
        && a.inputs == b.inputs
        && a.params == b.params
        && a.outputs == b.outputs
        && a.updates == b.updates
        && a.spans == b.spans
        && a.nodes
            .iter()
            .zip(&b.nodes)
            .all(|(x, y)| x.op == y.op && x.args == y.args && a.types.get(x.ty) == b.types.get(y.ty))
        && a.node_scopes.len() == b.node_scopes.len()
        && a.node_scopes
            .iter()
            .zip(&b.node_scopes)
            .all(|(x, y)| a.scopes[x.0 as usize] == b.scopes[y.0 as usize])
}

/// Runs the passes of one round in order, up to and including `last` (what
/// `modelc ir --after NAME` shows).
pub fn run_until(g: Graph, last: &str, opts: &PipelineOptions) -> Result<Graph, UnknownPass> {
    if pass_by_name(last).is_none() {
        return Err(UnknownPass(last.to_string()));
    }
    let mut g = g;
    for &(name, pass) in PASSES {
        g = run_pass(name, pass, &g, opts.verify);
        if name == last {
            break;
        }
    }
    Ok(g)
}

fn run_pass(name: &str, pass: Pass, g: &Graph, check: bool) -> Graph {
    let out = pass(g);
    if check && let Err(problems) = verify(&out) {
        panic!(
            "internal error: pass `{name}` produced an invalid graph `{}`:\n  {}\n{}",
            out.name,
            problems.join("\n  "),
            print_graph(&out)
        );
    }
    out
}
