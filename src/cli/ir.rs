//! `modelc ir FILE [--model NAME] [--arg k=v]... [--dim N=v]... [--grad]`: the graph IR text.

use clap::Args;
use modelc::autodiff::grad;
use modelc::elab::elaborate_model;
use modelc::ir::{BinaryOp, DType, Graph, NodeId, Op, ReduceOp, print_graph};
use modelc::passes::{PipelineOptions, run_pipeline, run_until};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct IrArgs {
    pub file: PathBuf,
    /// The model to elaborate (default: the file's only model).
    #[arg(long)]
    pub model: Option<String>,
    /// A model argument, e.g. `--arg layers=4`.
    #[arg(long = "arg", value_name = "NAME=VALUE")]
    pub args: Vec<String>,
    /// A symbolic dimension of the signature, e.g. `--dim B=1`.
    #[arg(long = "dim", value_name = "NAME=VALUE")]
    pub dims: Vec<String>,
    /// Elaborate in training mode (dropout active, batch statistics).
    #[arg(long)]
    pub training: bool,
    /// Print the graph after this pass of the first pipeline round (fold, simplify, cse, permute, dce)
    /// instead of the elaborated graph.
    #[arg(long, value_name = "PASS")]
    pub after: Option<String>,
    /// Print the graph after the whole optimisation pipeline.
    #[arg(long, conflicts_with = "after")]
    pub optimized: bool,
    /// Append the backward pass: the outputs become the gradients of the sum of every element
    /// of every f32 output with respect to each trainable parameter (`grad.<path>`).
    #[arg(long)]
    pub grad: bool,
    /// What to print: the graph (`graph`) or the fused kernel list after the pipeline
    /// (`kernels`).
    #[arg(long, default_value = "graph", value_parser = ["graph", "kernels"])]
    pub stage: String,
}

pub fn run(a: &IrArgs) -> ExitCode {
    let Some(prog) = super::load(&a.file) else { return ExitCode::from(1) };
    let (args, mut opts) = match (super::parse_args(&a.args), super::elab_options(&a.dims)) {
        (Ok(x), Ok(o)) => (x, o),
        (Err(e), _) | (_, Err(e)) => return super::usage_error(&e),
    };
    opts.training = a.training;
    let name = match super::pick_model(&prog, a.model.as_deref()) {
        Ok(n) => n,
        Err(e) => return super::usage_error(&e),
    };
    match elaborate_model(&prog, &name, &args, &opts) {
        Ok(e) => {
            super::report(&prog, &e.warnings);
            let popts = PipelineOptions::default();
            let mut graph = e.graph;
            if a.grad {
                match with_gradients(&mut graph) {
                    Ok(()) => {}
                    Err(err) => return super::usage_error(&err),
                }
            }
            let graph = if let Some(pass) = &a.after {
                match run_until(graph, pass, &popts) {
                    Ok(g) => g,
                    Err(err) => return super::usage_error(&err.to_string()),
                }
            } else if a.optimized {
                run_pipeline(graph, &popts)
            } else {
                graph
            };
            if a.stage == "kernels" {
                let graph =
                    if a.optimized || a.after.is_some() { graph } else { run_pipeline(graph, &popts) };
                print!("{}", modelc::sched::print_kernels(&modelc::sched::schedule(&graph)));
            } else {
                print!("{}", print_graph(&graph));
            }
            ExitCode::SUCCESS
        }
        Err(diags) => {
            super::report(&prog, &diags);
            ExitCode::from(1)
        }
    }
}

/// Replaces the outputs of `g` by the gradients of the sum of all its f32 outputs' elements
/// with respect to every trainable parameter.
fn with_gradients(g: &mut Graph) -> Result<(), String> {
    let mut loss = None;
    for o in g.outputs.clone() {
        if g.dtype(o.node) != DType::F32 {
            continue;
        }
        g.current_span = g.span(o.node);
        let rank = g.ty(o.node).rank() as u32;
        let s = if rank == 0 { o.node } else { g.reduce(ReduceOp::Sum, o.node, (0..rank).collect()) };
        let s = g.reshape(s, vec![]);
        loss = Some(match loss {
            None => s,
            Some(l) => g.binary(BinaryOp::Add, l, s),
        });
    }
    let loss = loss.ok_or("--grad needs a model with an f32 output")?;
    let trainable: Vec<u32> =
        (0..g.params.len() as u32).filter(|&i| g.params[i as usize].trainable).collect();
    let nodes: Vec<NodeId> = trainable
        .iter()
        .map(|&i| {
            g.node_ids().find(|&n| g.node(n).op == Op::Param { index: i }).unwrap_or_else(|| g.param_node(i))
        })
        .collect();
    let grads = grad(g, loss, &nodes).map_err(|e| e.to_string())?;
    g.outputs.clear();
    g.updates.clear();
    for (&i, d) in trainable.iter().zip(grads) {
        let name = format!("grad.{}", g.params[i as usize].path);
        g.add_output(&name, d);
    }
    Ok(())
}
