//! The `modelc` binary: exit codes and output of `check`, `ir` and `summary`.

use std::path::Path;
use std::process::Command;

fn modelc(args: &[&str]) -> (i32, String, String) {
    modelc_with(args, None)
}

/// `modelc args` with `MODELC_VMATH` set to `vmath` (unset when `None`).
fn modelc_with(args: &[&str], vmath: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_modelc"));
    cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR")).env("NO_COLOR", "1").env_remove("MODELC_VMATH");
    if let Some(v) = vmath {
        cmd.env("MODELC_VMATH", v);
    }
    let out = cmd.output().expect("modelc runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh temporary directory for `test` holding `in.safetensors` with `tensor` as `name`:
/// (directory, input file).
fn input_file(
    test: &str,
    name: &str,
    tensor: &modelc::tensor::Tensor,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("modelc-cli-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let input = dir.join("in.safetensors");
    modelc::runtime::checkpoint::write_tensors(&input, &[(name.to_string(), tensor)]).expect("input written");
    (dir, input)
}

#[test]
fn check_models_exits_zero() {
    let mut args = vec!["check"];
    let files: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
        .expect("models/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "model"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    args.extend(files.iter().map(String::as_str));
    let (code, _, err) = modelc(&args);
    assert_eq!(code, 0, "stderr:\n{err}");
}

#[test]
fn check_reports_all_three_errors_with_locations_and_exits_one() {
    let (code, _, err) = modelc(&["check", "tests/ui/check/three_independent_errors.model"]);
    assert_eq!(code, 1, "stderr:\n{err}");
    for (code, loc) in [
        ("E0501", "three_independent_errors.model:5:12"),
        ("E0201", "three_independent_errors.model:15:49"),
        ("E0101", "three_independent_errors.model:18:11"),
    ] {
        assert!(err.contains(code) && err.contains(loc), "missing {code} at {loc} in:\n{err}");
    }
    assert!(err.contains("3 error(s)"), "{err}");
}

#[test]
fn missing_file_is_an_error_not_a_panic() {
    let (code, _, err) = modelc(&["check", "no/such/file.model"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("E0105"), "{err}");
}

#[test]
fn summary_prints_the_parameter_count() {
    let (code, out, err) = modelc(&["summary", "models/austen_lm.model"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("trainable parameters: 429,664"), "{out}");
    assert!(out.contains("blocks.1.attn.qkv"), "{out}");
}

#[test]
fn ir_prints_the_graph_with_args_and_dims() {
    let (code, out, err) =
        modelc(&["ir", "models/austen_lm.model", "--arg", "layers=1", "--dim", "B=2", "--dim", "T=8"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("graph AustenLM.forward {"), "{out}");
    assert!(out.contains("input ids: i32[2, 8]"), "{out}");
    assert!(!out.contains("blocks.1."), "one layer only:\n{out}");
}

#[test]
fn ir_grad_outputs_a_gradient_per_trainable_parameter() {
    let (code, out, err) = modelc(&["ir", "tests/ui/ir/mlp.model", "--grad", "--optimized"]);
    assert_eq!(code, 0, "{err}");
    for p in ["net.layers.0.weight", "net.layers.0.bias", "net.layers.1.weight", "net.layers.1.bias"] {
        assert!(out.contains(&format!("output grad.{p} = ")), "{p}:\n{out}");
    }
    assert!(out.contains("matmul[ta]"), "{out}");
}

#[test]
fn bad_option_values_are_usage_errors() {
    let (code, _, err) = modelc(&["ir", "models/austen_lm.model", "--dim", "T=minus"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = modelc(&["ir", "models/austen_lm.model", "--model", "Nope"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("E0109"), "{err}");
}

#[test]
fn build_reports_kernels_and_compile_time() {
    let (code, out, err) = modelc(&["build", "models/austen_lm.model", "--dim", "B=1", "--dim", "T=8"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("matmul+epilogue"), "matmul epilogues are fused:\n{out}");
    assert!(out.contains("compile time:") && out.contains("codegen"), "{out}");
    assert!(out.contains("parameter initialisation"), "initialisation is reported on its own:\n{out}");
}

#[test]
fn run_jit_and_reference_agree_and_bad_inputs_are_named() {
    use modelc::runtime::checkpoint::{read_tensors, write_tensors};
    use modelc::tensor::Tensor;
    let x =
        Tensor::F32(ndarray::ArrayD::from_shape_fn(vec![3, 64], |i| (i[0] * 64 + i[1]) as f32 / 100.0 - 1.0));
    let (dir, input) = input_file("run", "x", &x);
    let mut outs = Vec::new();
    for backend in ["jit", "reference"] {
        let out = dir.join(format!("{backend}.safetensors"));
        let (code, _, err) = modelc(&[
            "run",
            "models/digits_mlp.model",
            "--input",
            input.to_str().expect("utf-8 path"),
            "--output",
            out.to_str().expect("utf-8 path"),
            "--backend",
            backend,
            "--seed",
            "3",
        ]);
        assert_eq!(code, 0, "{backend}: {err}");
        let ty = modelc::ir::TensorType::f32(vec![3, 10]);
        outs.push(
            read_tensors(&out, &[("out".to_string(), ty)], "output").expect("output readable").remove(0),
        );
    }
    let (a, b) = (outs[0].as_f32().expect("f32"), outs[1].as_f32().expect("f32"));
    for (x, y) in a.iter().zip(b.iter()) {
        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "jit {x} vs reference {y}");
    }
    // A tensor of the wrong name or shape is an error naming it.
    let bad = dir.join("bad.safetensors");
    let y = Tensor::F32(ndarray::ArrayD::zeros(vec![3, 65]));
    write_tensors(&bad, &[("x".to_string(), &y)]).expect("written");
    let (code, _, err) = modelc(&[
        "run",
        "models/digits_mlp.model",
        "--input",
        bad.to_str().expect("utf-8"),
        "--dim",
        "B=3",
        "--output",
        dir.join("o.safetensors").to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("input `x`") && err.contains("[3, 65]") && err.contains("f32[3, 64]"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn data_runs_the_digits_pipeline() {
    let (code, out, err) = modelc(&["data", "models/digits_data.model"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dedup") && out.contains("train"), "{out}");
}

/// `modelc bench --json`: one object per workload with the stage times and the statistics of
/// the timed runs, for a train block (its step on a real batch) and a model at two batches.
#[test]
fn bench_prints_one_json_object_per_workload() {
    let (code, out, err) = modelc(&[
        "bench",
        "models/digits_mlp.model",
        "--json",
        "--threads",
        "1",
        "--warmup",
        "1",
        "--iters",
        "3",
    ]);
    assert_eq!(code, 0, "stderr:\n{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!(lines.len(), 1, "{out}");
    let r = &lines[0];
    assert_eq!(r["workload"], "train digits_mlp");
    assert_eq!(r["kind"], "train_step");
    assert_eq!(r["inputs"], "data");
    assert_eq!(r["batch"], 64);
    assert_eq!(r["iters"], 3);
    for stage in ["load", "elaborate+autodiff", "passes", "schedule", "codegen", "finalize"] {
        assert!(r["compile_ms"][stage].as_f64().is_some_and(|v| v >= 0.0), "{stage}: {r}");
    }
    let (q1, med, q3) =
        (r["q1_ms"].as_f64().unwrap(), r["median_ms"].as_f64().unwrap(), r["q3_ms"].as_f64().unwrap());
    assert!(0.0 < q1 && q1 <= med && med <= q3, "{r}");

    let (code, out, err) = modelc(&[
        "bench",
        "models/digits_mlp.model",
        "--model",
        "DigitsMLP",
        "--batch",
        "1",
        "--batch",
        "3",
        "--json",
        "--threads",
        "1",
        "--iters",
        "2",
        "--profile",
    ]);
    assert_eq!(code, 0, "stderr:\n{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    let batches: Vec<u64> = lines.iter().map(|r| r["batch"].as_u64().unwrap()).collect();
    assert_eq!(batches, vec![1, 3]);
    assert!(
        lines
            .iter()
            .all(|r| r["kind"] == "inference"
                && r["profile_kernels"].as_array().is_some_and(|k| !k.is_empty()))
    );

    let (code, _, err) = modelc(&["bench", "models/digits_mlp.model", "--batch", "8"]);
    assert_eq!(code, 2, "--batch on a train block is a usage error: {err}");
}

#[test]
fn bench_times_a_model_with_checkpoint_weights() {
    let dir = std::env::temp_dir().join(format!("modelc-cli-bench-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ckpt = dir.join("weights.safetensors");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let compiled = modelc::Compiled::from_file(&root.join("models/digits_mlp.model")).expect("compiles");
    let model = compiled.model("DigitsMLP", &[], &[("B", 4)], 7).expect("model");
    model.save_weights(&ckpt).expect("save");
    let ck = ckpt.to_str().unwrap();
    let args = [
        "bench",
        "models/digits_mlp.model",
        "--model",
        "DigitsMLP",
        "--json",
        "--threads",
        "1",
        "--iters",
        "2",
    ];
    let (code, out, err) = modelc(&[&args[..], &["--checkpoint", ck]].concat());
    assert_eq!(code, 0, "stderr:\n{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    // a checkpoint that is not there is an error that names it, not a panic
    let missing = dir.join("missing.safetensors");
    let (code, _, err) = modelc(&[&args[..], &["--checkpoint", missing.to_str().unwrap()]].concat());
    assert_ne!(code, 0);
    assert!(err.contains("missing.safetensors") && !err.contains("panicked"), "{err}");
    // --checkpoint is for models: a train block's step starts from its own initialisation
    let (code, _, err) =
        modelc(&["bench", "models/digits_mlp.model", "--run", "digits_mlp", "--checkpoint", ck]);
    assert_eq!(code, 2, "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Native Adam updates (`jit::adam`, off with `MODELC_VMATH=inline` like the array functions)
/// change no bit of a training run: every tensor of the final checkpoint (parameters and both
/// moments) is the same with the path on and off, for plain Adam (the digits MLP), AdamW with
/// clipping (the char transformer, 3 steps), L2 decay with clipping and a scaled learning rate,
/// and AdamW with exempt biases.
#[test]
fn native_adam_updates_change_no_checkpoint_bit() {
    let dir = std::env::temp_dir().join(format!("modelc-cli-adam-{}", std::process::id()));
    let fixture = "tests/fixtures/train/adam_variants.model";
    for (file, run, steps) in [
        ("models/digits_mlp.model", "digits_mlp", "40"),
        ("models/austen_lm.model", "char_lm", "3"),
        (fixture, "adam_l2", "10"),
        (fixture, "adamw_groups", "10"),
    ] {
        let mut checkpoints = Vec::new();
        for mode in ["native", "inline"] {
            let out = dir.join(format!("{run}-{mode}"));
            let out_s = out.to_str().expect("utf-8 path");
            let args =
                ["train", file, "--run", run, "--steps", steps, "--threads", "2", "-q", "--out", out_s];
            let (code, _, err) = modelc_with(&args, (mode == "inline").then_some("inline"));
            assert_eq!(code, 0, "{run} {mode}: {err}");
            let (path, _) = modelc::train::checkpoint::latest(&out.join("checkpoints"))
                .expect("checkpoint dir")
                .expect("a final checkpoint");
            checkpoints.push(std::fs::read(path).expect("checkpoint readable"));
        }
        let a = safetensors::SafeTensors::deserialize(&checkpoints[0]).expect("safetensors");
        let b = safetensors::SafeTensors::deserialize(&checkpoints[1]).expect("safetensors");
        let names = a.names();
        assert!(names.iter().any(|n| n.ends_with("@adam.v")), "{run}: {names:?}");
        assert_eq!(names.len(), b.names().len(), "{run}");
        for name in names {
            let (x, y) = (a.tensor(name).expect("tensor"), b.tensor(name).expect("tensor"));
            assert!(x.data() == y.data(), "{run}: `{name}` differs with the native updates");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The native array exponentials and error functions (`jit::vmath`) give the inline code's
/// bits: the char transformer's logits (attention softmax, GELU) are the same bit for bit with
/// the path turned off (`MODELC_VMATH=inline`).
#[test]
fn native_array_math_changes_no_output_bit() {
    use modelc::runtime::checkpoint::read_tensors;
    use modelc::tensor::Tensor;
    let ids =
        Tensor::I32(ndarray::ArrayD::from_shape_fn(vec![2, 64], |i| ((i[0] * 131 + i[1] * 17) % 96) as i32));
    let (dir, input) = input_file("vmath", "ids", &ids);
    let mut outs = Vec::new();
    for mode in ["native", "inline"] {
        let out = dir.join(format!("{mode}.safetensors"));
        let args = [
            "run",
            "models/austen_lm.model",
            "--model",
            "AustenLM",
            "--input",
            input.to_str().expect("utf-8 path"),
            "--output",
            out.to_str().expect("utf-8 path"),
            "--seed",
            "5",
        ];
        let (code, _, err) = modelc_with(&args, (mode == "inline").then_some("inline"));
        assert_eq!(code, 0, "{mode}: {err}");
        let ty = modelc::ir::TensorType::f32(vec![2, 64, 96]);
        outs.push(
            read_tensors(&out, &[("out0".to_string(), ty)], "output").expect("output readable").remove(0),
        );
    }
    let (a, b) = (outs[0].as_f32().expect("f32"), outs[1].as_f32().expect("f32"));
    assert!(a.iter().zip(b.iter()).all(|(x, y)| x.to_bits() == y.to_bits()), "outputs differ");
    let _ = std::fs::remove_dir_all(&dir);
}
