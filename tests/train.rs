//! End-to-end training: the example classifiers reach their stated test accuracy, a planted
//! NaN stops the run with the step and the source location and leaves the checkpoints intact,
//! a SIGKILLed run resumes to exactly the losses of an uninterrupted one, and Ctrl-C saves a
//! checkpoint. Fixed seeds throughout; one thread where exact equality is asserted.

use modelc::elab::Program;
use modelc::train::{Progress, TrainError, TrainOptions, train};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("train").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn load(path: &str) -> Program {
    let prog = Program::load(&root().join(path));
    assert!(prog.diagnostics.is_empty(), "{path}: {:?}", prog.diagnostics);
    prog
}

fn opts(out: &Path) -> TrainOptions {
    TrainOptions {
        out: Some(out.to_path_buf()),
        threads: Some(1),
        progress: Progress::Quiet,
        ..TrainOptions::default()
    }
}

fn metric(s: &modelc::train::TrainSummary, split: &str, name: &str) -> f64 {
    s.final_metrics
        .iter()
        .find(|(sp, n, _)| sp == split && n == name)
        .map(|(_, _, v)| *v)
        .unwrap_or_else(|| panic!("no {split}_{name} in {:?}", s.final_metrics))
}

#[test]
fn digits_mlp_reaches_97_percent() {
    let prog = load("models/digits_mlp.model");
    let out = scratch("mlp");
    let s = train(&prog, &opts(&out)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.steps, 440, "20 epochs of 22 batches");
    let acc = metric(&s, "test", "accuracy");
    assert!(acc >= 0.97, "digits MLP test accuracy {acc}");
    assert!(s.checkpoint.as_ref().is_some_and(|p| p.exists()));
}

#[test]
fn digits_cnn_reaches_97_5_percent() {
    let prog = load("models/digits_cnn.model");
    let out = scratch("cnn");
    let s = train(&prog, &opts(&out)).unwrap_or_else(|e| panic!("{e}"));
    let acc = metric(&s, "test", "accuracy");
    assert!(acc >= 0.975, "digits CNN test accuracy {acc}");
}

#[test]
fn a_planted_nan_names_the_step_and_the_log_and_keeps_the_checkpoints() {
    let prog = load("tests/fixtures/train/drift.model");
    let out = scratch("drift");
    let err = train(&prog, &opts(&out)).expect_err("the third step takes the log of a negative");
    let TrainError::NonFinite { diagnostic, step, sources } = &err else { panic!("unexpected error: {err}") };
    assert_eq!(*step, 3);
    assert!(diagnostic.message.contains("step 3: the loss is NaN"), "{}", diagnostic.message);
    let text =
        modelc::diag::render(sources, diagnostic, modelc::diag::RenderOptions { color: false, width: 100 });
    assert!(text.contains("`log` gives NaN here"), "{text}");
    assert!(text.contains("drift.model:22:"), "the location of `log(model.s)`: {text}");
    // The checkpoints of steps 1 and 2 are intact, and nothing of step 3 was written.
    let dir = out.join("checkpoints");
    let mut steps: Vec<u64> = modelc::train::checkpoint::list(&dir).into_iter().map(|(s, _)| s).collect();
    steps.sort();
    assert_eq!(steps, vec![1, 2]);
    let meta =
        modelc::train::checkpoint::read_meta(&dir.join("step-00000002.safetensors")).expect("readable");
    assert_eq!(meta.step, 2);
    let st = std::fs::read(dir.join("step-00000002.safetensors")).expect("read");
    let st = safetensors::SafeTensors::deserialize(&st).expect("a valid safetensors file");
    let s = st.tensor("s").expect("parameter s");
    let v = f32::from_le_bytes(s.data()[..4].try_into().expect("4 bytes"));
    assert!((v - (-0.65)).abs() < 1e-4, "s after two steps is 0.4 - 0.3 * 3.5 = -0.65, got {v}");
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_modelc"));
    c.current_dir(root());
    c
}

/// `(step, loss)` of every training line of a run's metrics.jsonl.
fn train_losses(out: &Path) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object a line");
            (v["split"] == "train")
                .then(|| (v["step"].as_u64().expect("step"), v["loss"].as_f64().expect("loss")))
        })
        .collect()
}

fn wait_for_checkpoint(dir: &Path, child: &mut std::process::Child) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if !modelc::train::checkpoint::list(dir).is_empty() {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

#[test]
fn a_killed_run_resumes_to_the_uninterrupted_losses() {
    let model = "tests/fixtures/train/steady.model";
    let killed = scratch("killed");
    let mut child = bin()
        .args(["train", model, "--threads", "1", "-q", "--out"])
        .arg(&killed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn modelc train");
    let ckpts = killed.join("checkpoints");
    assert!(wait_for_checkpoint(&ckpts, &mut child), "no checkpoint appeared");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    // Every checkpoint left behind reads back.
    let left = modelc::train::checkpoint::list(&ckpts);
    assert!(!left.is_empty());
    for (_, p) in &left {
        modelc::train::checkpoint::read_meta(p).unwrap_or_else(|e| panic!("unreadable checkpoint: {e}"));
        let bytes = std::fs::read(p).expect("read");
        safetensors::SafeTensors::deserialize(&bytes).expect("a complete safetensors file");
    }
    let latest = left.iter().map(|(s, _)| *s).max().expect("one");
    let target = (latest + 60).max(200);
    let status = bin()
        .args(["train", model, "--threads", "1", "-q", "--resume", "--steps", &target.to_string(), "--out"])
        .arg(&killed)
        .stdout(Stdio::null())
        .status()
        .expect("resume");
    assert!(status.success());
    let whole = scratch("whole");
    let status = bin()
        .args(["train", model, "--threads", "1", "-q", "--steps", &target.to_string(), "--out"])
        .arg(&whole)
        .stdout(Stdio::null())
        .status()
        .expect("uninterrupted");
    assert!(status.success());
    let a = train_losses(&killed);
    let b = train_losses(&whole);
    assert_eq!(a.len(), target as usize, "one line per step after the resume cut metrics.jsonl back");
    assert_eq!(a, b, "resumed from step {latest}: the losses differ from the uninterrupted run");
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_130() {
    let out = scratch("sigint");
    let mut child = bin()
        .args(["train", "tests/fixtures/train/steady.model", "--threads", "1", "-q", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    assert!(wait_for_checkpoint(&out.join("checkpoints"), &mut child), "no checkpoint appeared");
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let output = child.wait_with_output().expect("exits");
    assert_eq!(output.status.code(), Some(130));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("interrupted after step"), "{err}");
    let step: u64 = err
        .split("interrupted after step ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|n| n.trim().parse().ok())
        .expect("the step in the message");
    let path = out.join("checkpoints").join(modelc::train::checkpoint::file_name(step));
    let meta = modelc::train::checkpoint::read_meta(&path).expect("the interrupted step's checkpoint");
    assert_eq!(meta.step, step);
}

#[test]
fn json_summary_is_the_last_line_of_stdout() {
    let out = scratch("json");
    let output = bin()
        .args([
            "train",
            "tests/fixtures/train/steady.model",
            "--steps",
            "30",
            "--threads",
            "1",
            "-q",
            "--json",
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().expect("output");
    let v: serde_json::Value = serde_json::from_str(last).expect("JSON");
    assert_eq!(v["run"], "steady");
    assert_eq!(v["steps"], 30);
    assert!(v["wall_seconds"].as_f64().is_some());
    let acc = v["test_accuracy"].as_f64().expect("test_accuracy");
    assert!((0.0..=1.0).contains(&acc));
    assert!(v["test_loss"].as_f64().is_some_and(f64::is_finite));
    // `eval` with the final checkpoint reproduces the final evaluation.
    let ckpt = v["checkpoint"].as_str().expect("checkpoint path");
    let output = bin()
        .args(["eval", "tests/fixtures/train/steady.model", "--threads", "1", "--checkpoint", ckpt, "--json"])
        .output()
        .expect("eval runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let e: serde_json::Value = serde_json::from_str(stdout.lines().last().expect("json")).expect("JSON");
    assert_eq!(e["test_accuracy"], v["test_accuracy"]);
}

#[test]
fn predict_classifies_a_split_and_a_csv_file() {
    let out = scratch("predict");
    let status = bin()
        .args([
            "train",
            "tests/fixtures/train/steady.model",
            "--steps",
            "60",
            "--threads",
            "1",
            "-q",
            "--out",
        ])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("train");
    assert!(status.success());
    let ckpt = out.join("checkpoints").join(modelc::train::checkpoint::file_name(60));
    // The first five rows of the data set, with their labels, then without the label column.
    let csv = std::fs::read_to_string(root().join("data/digits.csv")).expect("digits.csv");
    let lines: Vec<&str> = csv.lines().take(6).collect();
    let labelled = out.join("five.csv");
    std::fs::write(&labelled, lines.join("\n")).expect("write");
    let unlabelled = out.join("five_nolabel.csv");
    let strip = |l: &str| l.rsplit_once(',').expect("a label column").0.to_string();
    std::fs::write(&unlabelled, lines.iter().map(|l| strip(l)).collect::<Vec<_>>().join("\n"))
        .expect("write");
    for (file, with_labels) in [(&labelled, true), (&unlabelled, false)] {
        let output = bin()
            .args(["predict", "tests/fixtures/train/steady.model", "--threads", "1", "--checkpoint"])
            .arg(&ckpt)
            .arg("--input")
            .arg(file)
            .output()
            .expect("predict");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8_lossy(&output.stdout);
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(rows.len(), 5, "{text}");
        for (i, r) in rows.iter().enumerate() {
            let cells: Vec<&str> = r.split(',').collect();
            assert_eq!(cells[0], i.to_string());
            assert!(cells[1].parse::<usize>().is_ok_and(|c| c < 10), "{r}");
            let p: f32 = cells[2].parse().expect("probability");
            assert!((0.0..=1.0).contains(&p));
            assert_eq!(cells[3].is_empty(), !with_labels, "{r}");
        }
    }
    // A row with a missing cell is an error naming its line.
    let broken = out.join("broken.csv");
    std::fs::write(&broken, format!("{}\n{}\n", lines[0], strip(lines[1]).rsplit_once(',').unwrap().0))
        .expect("write");
    let output = bin()
        .args(["predict", "tests/fixtures/train/steady.model", "--checkpoint"])
        .arg(&ckpt)
        .arg("--input")
        .arg(&broken)
        .output()
        .expect("predict");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("E0625") && err.contains("broken.csv:"), "{err}");
    // The held-out split, labelled.
    let output = bin()
        .args([
            "predict",
            "tests/fixtures/train/steady.model",
            "--threads",
            "1",
            "--split",
            "test",
            "--checkpoint",
        ])
        .arg(&ckpt)
        .output()
        .expect("predict");
    assert!(output.status.success());
    let rows = String::from_utf8_lossy(&output.stdout).lines().count() - 1;
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(rows > 300, "a fifth of 1797 rows: {rows}");
    assert!(err.contains(&format!(" of {rows} correct")), "every row is labelled and counted: {err}");
}

#[test]
fn generate_continues_a_prompt_from_a_text_checkpoint() {
    let out = scratch("generate");
    let model = "tests/fixtures/train/tiny_lm.model";
    let status = bin()
        .args(["train", model, "--threads", "1", "-q", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("train");
    assert!(status.success());
    let ckpt =
        modelc::train::checkpoint::latest(&out.join("checkpoints")).expect("dir").expect("a checkpoint").0;
    let run = |seed: &str| {
        let output = bin()
            .args([
                "generate",
                model,
                "--threads",
                "1",
                "--prompt",
                "Elizabeth",
                "--tokens",
                "40",
                "--seed",
                seed,
            ])
            .arg("--checkpoint")
            .arg(&ckpt)
            .output()
            .expect("generate");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim_end_matches('\n').to_string()
    };
    let a = run("1");
    assert!(a.starts_with("Elizabeth"));
    assert_eq!(a.chars().count(), "Elizabeth".len() + 40, "{a:?}");
    assert_eq!(a, run("1"), "the same seed gives the same text");
}

fn tensor_bytes(path: &Path, name: &str) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("checkpoint");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    st.tensor(name).unwrap_or_else(|_| panic!("no `{name}`")).data().to_vec()
}

#[test]
fn parameter_groups_scale_the_learning_rate_by_path() {
    // The first layer frozen by `lr_scale: 0`, the second trained: after 1 and after 6 steps
    // the first layer's weights are the same, the second's are not.
    let text = std::fs::read_to_string(root().join("tests/fixtures/train/steady.model")).expect("fixture").replace(
        "    steps: 100000\n",
        "    steps: 100000\n    groups: [group(match: [\"net.layers.0.*\"], lr_scale: 0.0), group(match: [\"*.bias\"], weight_decay: 0.0)]\n",
    );
    let prog = Program::from_source("groups.model", &text, Some(&root().join("tests/fixtures/train")));
    assert!(prog.diagnostics.is_empty(), "{:?}", prog.diagnostics);
    let mut ckpts = Vec::new();
    for steps in [1, 6] {
        let out = scratch(&format!("groups{steps}"));
        let s = train(&prog, &TrainOptions { steps: Some(steps), ..opts(&out) })
            .unwrap_or_else(|e| panic!("{e}"));
        ckpts.push(s.checkpoint.expect("a final checkpoint"));
    }
    assert_eq!(
        tensor_bytes(&ckpts[0], "net.layers.0.weight"),
        tensor_bytes(&ckpts[1], "net.layers.0.weight")
    );
    assert_ne!(
        tensor_bytes(&ckpts[0], "net.layers.1.weight"),
        tensor_bytes(&ckpts[1], "net.layers.1.weight")
    );
}
