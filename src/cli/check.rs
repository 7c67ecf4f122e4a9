//! `modelc check FILE...`: parse, name-check and elaborate everything; exit 1 on errors.

use modelc::elab::{Program, check_program};
use std::path::PathBuf;
use std::process::ExitCode;

pub fn run(files: &[PathBuf], dims: &[String]) -> ExitCode {
    let opts = match super::elab_options(dims) {
        Ok(o) => o,
        Err(e) => return super::usage_error(&e),
    };
    if files.is_empty() {
        return super::usage_error("give at least one .model file");
    }
    let mut failed = false;
    for f in files {
        let prog = Program::load(f);
        let diags = check_program(&prog, &opts);
        let errors = diags.iter().filter(|d| d.is_error()).count();
        failed |= super::report(&prog, &diags);
        if errors == 0 {
            eprintln!("{}: ok", f.display());
        } else {
            eprintln!("{}: {errors} error(s)", f.display());
        }
    }
    if failed { ExitCode::from(1) } else { ExitCode::SUCCESS }
}
