//! A `train` block read into a [`TrainSpec`]: which model, data, loss and metrics, the
//! optimizer, schedule, length, evaluation, logging and checkpoint settings. Every entry is
//! checked here with a span and a hint; values are compile-time expressions (`3e-3 * 2` works).
//! The keys and their defaults are listed in `docs/training.md`.

use crate::diag::Diagnostic;
use crate::elab::Program;
use crate::elab::value::Value;
use crate::source::Span;
use crate::syntax::ast::{ConfigBlock, Entry, Expr, ExprKind, Item};

/// The optimizer of a train block.
#[derive(Clone, Debug, PartialEq)]
pub enum Optimizer {
    /// SGD with optional (Nesterov) momentum; weight decay as an L2 term of the gradient.
    Sgd { lr: f64, momentum: f64, nesterov: bool, weight_decay: f64 },
    /// Adam; `decoupled` weight decay is AdamW (decay applied to the weights, not the gradient).
    Adam { lr: f64, beta1: f64, beta2: f64, eps: f64, weight_decay: f64, decoupled: bool },
}

impl Optimizer {
    pub fn lr(&self) -> f64 {
        match self {
            Optimizer::Sgd { lr, .. } | Optimizer::Adam { lr, .. } => *lr,
        }
    }

    pub fn weight_decay(&self) -> f64 {
        match self {
            Optimizer::Sgd { weight_decay, .. } | Optimizer::Adam { weight_decay, .. } => *weight_decay,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd { .. } => "sgd",
            Optimizer::Adam { decoupled: false, .. } => "adam",
            Optimizer::Adam { decoupled: true, .. } => "adamw",
        }
    }
}

/// The learning-rate schedule: a multiplier of the optimizer's `lr` at each step.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    /// Linear warm-up: the multiplier is scaled by `min(1, (step + 1) / warmup)`.
    pub warmup: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleKind {
    Constant,
    /// Multiplied by `gamma` every `every` steps.
    Step {
        every: u64,
        gamma: f64,
    },
    /// Half a cosine from 1 down to `min` over the run.
    Cosine {
        min: f64,
    },
    /// A straight line from 1 down to `end` over the run.
    Linear {
        end: f64,
    },
}

impl Schedule {
    /// The multiplier of step `step` (0-based) of a run of `total` steps.
    pub fn factor(&self, step: u64, total: u64) -> f64 {
        let warm = if self.warmup == 0 { 1.0 } else { ((step + 1) as f64 / self.warmup as f64).min(1.0) };
        let frac = if total == 0 { 0.0 } else { (step.min(total) as f64) / total as f64 };
        let f = match &self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Step { every, gamma } => gamma.powi((step / every.max(&1)) as i32),
            ScheduleKind::Cosine { min } => {
                min + (1.0 - min) * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos())
            }
            ScheduleKind::Linear { end } => 1.0 - (1.0 - end) * frac,
        };
        warm * f
    }
}

/// A parameter group: parameters whose path matches one of `patterns` (`*` matches any run
/// of characters) get their own weight decay and a scaled learning rate. The first matching
/// group wins; unmatched parameters use the optimizer's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamGroup {
    pub patterns: Vec<String>,
    pub weight_decay: Option<f64>,
    pub lr_scale: f64,
    pub span: Span,
}

/// How long to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Length {
    Steps(u64),
    Epochs(u64),
}

/// A metric reported at evaluation.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricKind {
    /// An expression of the batch, averaged over a split (weighted by batch rows).
    Expr(Expr),
    /// `exp` of the split's mean loss.
    Perplexity,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub name: String,
    pub kind: MetricKind,
    pub span: Span,
}

/// A checked train block.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSpec {
    pub name: String,
    pub span: Span,
    pub data: String,
    pub loss: Expr,
    pub metrics: Vec<Metric>,
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    pub clip: Option<f64>,
    pub groups: Vec<ParamGroup>,
    pub length: Length,
    /// Evaluate every N steps (`None`: only at the end) on these splits (empty: every split
    /// but `train`).
    pub eval_every: Option<u64>,
    pub eval_on: Vec<String>,
    /// Log the training loss every N steps.
    pub log_every: u64,
    /// Write a checkpoint every N steps (`None`: only at the end), keeping the last `keep`.
    pub checkpoint_every: Option<u64>,
    pub keep: usize,
    /// Run directory; default `runs/<name>` beside the file.
    pub out: Option<String>,
    pub seed: u64,
}

const KEYS: &[&str] = &[
    "model",
    "data",
    "loss",
    "metric",
    "optimizer",
    "schedule",
    "clip",
    "groups",
    "steps",
    "epochs",
    "eval",
    "log",
    "checkpoint",
    "out",
    "seed",
];

/// Reads train block `name` of `prog`.
pub fn lower_train_block(prog: &Program, name: &str) -> Result<TrainSpec, Vec<Diagnostic>> {
    let block = find_train_block(prog, name)?;
    let mut r = Reader { prog, diags: Vec::new() };
    let spec = r.block(block);
    if r.diags.iter().any(Diagnostic::is_error) {
        return Err(r.diags);
    }
    Ok(spec.expect("a block without errors lowers"))
}

/// The diagnostics of a train block's settings for `modelc check`, leaving out the missing
/// `model:` and `data:` entries, which the model and data checks report.
pub fn check_train_settings(prog: &Program, block: &ConfigBlock) -> Vec<Diagnostic> {
    let mut r = Reader { prog, diags: Vec::new() };
    r.block(block);
    r.diags
        .into_iter()
        .filter(|d| {
            !(matches!(d.code, "E0113" | "E0111")
                && (d.message.contains("`model") || d.message.contains("`data")))
        })
        .collect()
}

/// The train block named `name`, or the only one of the file when `name` is empty.
pub fn find_train_block<'p>(prog: &'p Program, name: &str) -> Result<&'p ConfigBlock, Vec<Diagnostic>> {
    let blocks: Vec<&ConfigBlock> = prog
        .root_items()
        .filter_map(|(_, i)| match i {
            Item::Train(t) => Some(t),
            _ => None,
        })
        .collect();
    let names = || blocks.iter().map(|b| format!("`{}`", b.name.name)).collect::<Vec<_>>().join(", ");
    if name.is_empty() {
        return match blocks.as_slice() {
            [b] => Ok(b),
            [] => Err(vec![
                Diagnostic::error("E0801", "the file has no `train` block")
                    .with_help("add `train NAME { model: ..., data: ..., loss: ..., optimizer: ... }`"),
            ]),
            _ => Err(vec![
                Diagnostic::error("E0801", format!("the file has several train blocks ({})", names()))
                    .with_help("choose one with `--run NAME`"),
            ]),
        };
    }
    blocks.iter().find(|b| b.name.name == name).copied().ok_or_else(|| {
        vec![
            Diagnostic::error("E0801", format!("no train block named `{name}`"))
                .with_help(format!("train blocks in this file: {}", names())),
        ]
    })
}

/// A call `name(args)` with its arguments matched to parameter names.
struct Call<'e> {
    name: String,
    span: Span,
    args: Vec<(String, &'e Expr)>,
}

struct Reader<'p> {
    prog: &'p Program,
    diags: Vec<Diagnostic>,
}

impl Reader<'_> {
    fn err(
        &mut self,
        code: &'static str,
        span: Span,
        msg: impl Into<String>,
        label: &str,
        help: impl Into<String>,
    ) {
        self.diags.push(Diagnostic::error(code, msg).at(span, label).with_help(help));
    }

    fn block(&mut self, b: &ConfigBlock) -> Option<TrainSpec> {
        let mut seen: Vec<(String, Span)> = Vec::new();
        let mut data = None;
        let mut loss = None;
        let mut metrics = Vec::new();
        let mut optimizer = None;
        let mut schedule = Schedule { kind: ScheduleKind::Constant, warmup: 0 };
        let mut clip = None;
        let mut groups = Vec::new();
        let mut length = None;
        let mut length_given = false;
        let mut eval_every = None;
        let mut eval_on = Vec::new();
        let mut log_every = 10;
        let mut checkpoint_every = None;
        let mut keep = 3;
        let mut out = None;
        let mut seed = 0;
        for e in &b.entries {
            let key = e.key_path();
            if !KEYS.contains(&key.as_str()) {
                let help = match crate::elab::closest_name(&key, KEYS) {
                    Some(s) => format!("did you mean `{s}`? the keys are listed in docs/training.md"),
                    None => format!("a train block takes {}", KEYS.join(", ")),
                };
                self.err(
                    "E0802",
                    e.key[0].span,
                    format!("unknown train setting `{key}`"),
                    "unknown key",
                    help,
                );
                continue;
            }
            if key != "metric" {
                if let Some((_, prev)) = seen.iter().find(|(k, _)| *k == key) {
                    let prev = *prev;
                    self.diags.push(
                        Diagnostic::error("E0802", format!("`{key}` is given twice"))
                            .at(e.key[0].span, "again here")
                            .with_label(prev, "first here")
                            .with_help("keep one of them"),
                    );
                    continue;
                }
                seen.push((key.clone(), e.key[0].span));
                if let Some(l) = &e.label {
                    self.err(
                        "E0802",
                        l.span,
                        format!("`{key}` takes no label"),
                        "unexpected label",
                        "only `metric NAME: ...` is labelled",
                    );
                }
            }
            match key.as_str() {
                "model" => {} // checked with the model (see `check_train`)
                "data" => match &e.value.kind {
                    ExprKind::Name(n) => data = Some(n.clone()),
                    _ => self.err(
                        "E0111",
                        e.value.span,
                        "`data:` takes the name of a data block",
                        "not a name",
                        "write `data: my_data`",
                    ),
                },
                "loss" => loss = Some(e.value.clone()),
                "metric" => self.metric(e, &mut metrics),
                "optimizer" => optimizer = self.optimizer(&e.value),
                "schedule" => {
                    if let Some(s) = self.schedule(&e.value) {
                        schedule = s;
                    }
                }
                "clip" => clip = self.positive(&e.value, "a gradient-norm limit"),
                "groups" => groups = self.groups(&e.value),
                "steps" | "epochs" => {
                    length_given = true;
                    if let Some(n) = self.count(&e.value, 1) {
                        if length.is_some() {
                            self.err(
                                "E0802",
                                e.key[0].span,
                                "give either `steps` or `epochs`, not both",
                                "second length",
                                "remove one of them",
                            );
                        }
                        length = Some(if key == "steps" { Length::Steps(n) } else { Length::Epochs(n) });
                    }
                }
                "eval" => {
                    if let Some((every, on)) = self.eval(&e.value) {
                        eval_every = every;
                        if let Some(on) = on {
                            eval_on = on;
                        }
                    }
                }
                "log" => {
                    if let Some(n) = self.every(&e.value, "log", &[]).and_then(|(n, _)| n) {
                        log_every = n;
                    }
                }
                "checkpoint" => {
                    if let Some((n, call)) = self.every(&e.value, "checkpoint", &["keep"]) {
                        checkpoint_every = n;
                        if let Some(k) =
                            call.and_then(|c| c.args.iter().find(|(n, _)| n == "keep").map(|a| a.1))
                            && let Some(k) = self.count(k, 1)
                        {
                            keep = k as usize;
                        }
                    }
                }
                "out" => out = self.string(&e.value),
                "seed" => {
                    if let Some(s) = self.count(&e.value, 0) {
                        seed = s;
                    }
                }
                _ => unreachable!("keys are checked against KEYS above"),
            }
        }
        let missing = |k: &str| !seen.iter().any(|(s, _)| s == k);
        for (k, help) in [
            ("model", "add `model: MyModel()`"),
            ("data", "add `data: NAME` naming a data block"),
            ("loss", "add e.g. `loss: cross_entropy(model(x), y)`"),
            ("optimizer", "add e.g. `optimizer: adamw(lr: 3e-3, weight_decay: 0.1)`"),
        ] {
            if missing(k) {
                self.err(
                    "E0113",
                    b.name.span,
                    format!("train block `{}` has no `{k}:` entry", b.name.name),
                    &format!("no {k}"),
                    help,
                );
            }
        }
        if !length_given {
            self.err(
                "E0113",
                b.name.span,
                format!("train block `{}` says neither `steps:` nor `epochs:`", b.name.name),
                "no length",
                "add `steps: 2000` or `epochs: 20`",
            );
        }
        if self.diags.iter().any(Diagnostic::is_error) {
            return None;
        }
        Some(TrainSpec {
            name: b.name.name.clone(),
            span: b.name.span,
            data: data?,
            loss: loss?,
            metrics,
            optimizer: optimizer?,
            schedule,
            clip,
            groups,
            length: length?,
            eval_every,
            eval_on,
            log_every,
            checkpoint_every,
            keep,
            out,
            seed,
        })
    }

    fn metric(&mut self, e: &Entry, metrics: &mut Vec<Metric>) {
        let Some(label) = &e.label else {
            self.err(
                "E0802",
                e.key[0].span,
                "a metric needs a name",
                "unnamed metric",
                "write `metric accuracy: accuracy(model(x), y)`",
            );
            return;
        };
        if label.name == "loss" {
            self.err(
                "E0802",
                label.span,
                "`loss` is always reported; name this metric differently",
                "reserved name",
                "pick another name",
            );
            return;
        }
        if metrics.iter().any(|m: &Metric| m.name == label.name) {
            self.err(
                "E0802",
                label.span,
                format!("metric `{}` is given twice", label.name),
                "again",
                "rename one",
            );
            return;
        }
        let kind = match &e.value.kind {
            ExprKind::Name(n) if n == "perplexity" => MetricKind::Perplexity,
            _ => MetricKind::Expr(e.value.clone()),
        };
        metrics.push(Metric { name: label.name.clone(), kind, span: label.span });
    }

    // ---- calls -----------------------------------------------------------------------------

    /// Reads `name(args)` (or a bare `name`) where `name` is one of `known`, each with its
    /// parameter names in positional order.
    fn call<'e>(&mut self, e: &'e Expr, known: &[(&str, &[&str])], what: &str) -> Option<Call<'e>> {
        let (name, name_span, args) = match &e.kind {
            ExprKind::Call { callee, args } => match &callee.kind {
                ExprKind::Name(n) => (n.as_str(), callee.span, args.as_slice()),
                _ => {
                    self.err(
                        "E0803",
                        e.span,
                        format!("expected {what}"),
                        "not a call",
                        "see docs/training.md",
                    );
                    return None;
                }
            },
            ExprKind::Name(n) => (n.as_str(), e.span, &[][..]),
            _ => {
                let names: Vec<String> = known.iter().map(|(n, _)| format!("`{n}(...)`")).collect();
                self.err(
                    "E0803",
                    e.span,
                    format!("expected {what}"),
                    "not a call",
                    format!("write one of {}", names.join(", ")),
                );
                return None;
            }
        };
        let Some((_, params)) = known.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
            let help = match crate::elab::closest_name(name, &names) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("expected one of {}", names.join(", ")),
            };
            self.err("E0803", name_span, format!("unknown {what} `{name}`"), "not known", help);
            return None;
        };
        let mut call = Call { name: name.to_string(), span: e.span, args: Vec::new() };
        let mut ok = true;
        for (i, a) in args.iter().enumerate() {
            let pname = match &a.name {
                Some(n) => {
                    if !params.contains(&n.name.as_str()) {
                        self.err(
                            "E0804",
                            n.span,
                            format!("`{name}` has no argument `{}`", n.name),
                            "unknown argument",
                            format!("`{name}` takes {}", list_or_nothing(params)),
                        );
                        ok = false;
                        continue;
                    }
                    n.name.clone()
                }
                None => match params.get(i) {
                    Some(p) => p.to_string(),
                    None => {
                        self.err(
                            "E0804",
                            a.value.span,
                            format!("too many arguments for `{name}`"),
                            "extra argument",
                            format!("`{name}` takes {}", list_or_nothing(params)),
                        );
                        ok = false;
                        continue;
                    }
                },
            };
            if call.args.iter().any(|(n, _)| *n == pname) {
                self.err(
                    "E0804",
                    a.value.span,
                    format!("argument `{pname}` of `{name}` is given twice"),
                    "again",
                    "keep one",
                );
                ok = false;
                continue;
            }
            call.args.push((pname, &a.value));
        }
        ok.then_some(call)
    }

    fn arg<'e>(call: &Call<'e>, name: &str) -> Option<&'e Expr> {
        call.args.iter().find(|(n, _)| n == name).map(|(_, e)| *e)
    }

    fn num_arg(
        &mut self,
        call: &Call<'_>,
        name: &str,
        default: f64,
        check: fn(f64) -> bool,
        want: &str,
    ) -> f64 {
        match Self::arg(call, name) {
            None => default,
            Some(e) => match self.number(e) {
                Some(v) if check(v) => v,
                Some(v) => {
                    self.err(
                        "E0805",
                        e.span,
                        format!("`{name}` of `{}` must be {want}, found {v}", call.name),
                        "out of range",
                        format!("give {want}"),
                    );
                    default
                }
                None => default,
            },
        }
    }

    fn optimizer(&mut self, e: &Expr) -> Option<Optimizer> {
        let call = self.call(
            e,
            &[
                ("sgd", &["lr", "momentum", "nesterov", "weight_decay"]),
                ("adam", &["lr", "betas", "eps", "weight_decay"]),
                ("adamw", &["lr", "betas", "eps", "weight_decay"]),
            ],
            "optimizer",
        )?;
        let Some(lr_e) = Self::arg(&call, "lr") else {
            self.err(
                "E0804",
                call.span,
                format!("`{}` needs a learning rate", call.name),
                "no `lr`",
                format!("write `{}(lr: 1e-3)`", call.name),
            );
            return None;
        };
        let lr = self.positive(lr_e, "a learning rate");
        let pos = |v: f64| v >= 0.0 && v.is_finite();
        let decay_default = if call.name == "adamw" { 0.01 } else { 0.0 };
        let weight_decay = self.num_arg(&call, "weight_decay", decay_default, pos, "a non-negative number");
        Some(match call.name.as_str() {
            "sgd" => {
                let momentum = self.num_arg(&call, "momentum", 0.0, |v| (0.0..1.0).contains(&v), "in [0, 1)");
                let nesterov = match Self::arg(&call, "nesterov") {
                    Some(e) => self.boolean(e)?,
                    None => false,
                };
                if nesterov && momentum == 0.0 {
                    self.err(
                        "E0805",
                        call.span,
                        "Nesterov momentum needs `momentum` > 0",
                        "nesterov without momentum",
                        "add `momentum: 0.9`",
                    );
                }
                Optimizer::Sgd { lr: lr?, momentum, nesterov, weight_decay }
            }
            name => {
                let (beta1, beta2) = match Self::arg(&call, "betas") {
                    None => (0.9, 0.999),
                    Some(b) => {
                        let v = self.value(b)?;
                        match pair(&v) {
                            Some((b1, b2)) if (0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2) => {
                                (b1, b2)
                            }
                            _ => {
                                self.err(
                                    "E0805",
                                    b.span,
                                    "`betas` must be two numbers in [0, 1)",
                                    "not two betas",
                                    "write `betas: (0.9, 0.999)`",
                                );
                                return None;
                            }
                        }
                    }
                };
                let eps = self.num_arg(&call, "eps", 1e-8, |v| v > 0.0, "a positive number");
                Optimizer::Adam { lr: lr?, beta1, beta2, eps, weight_decay, decoupled: name == "adamw" }
            }
        })
    }

    fn schedule(&mut self, e: &Expr) -> Option<Schedule> {
        let call = self.call(
            e,
            &[
                ("constant", &["warmup"]),
                ("step", &["every", "gamma", "warmup"]),
                ("cosine", &["warmup", "min"]),
                ("linear", &["warmup", "end"]),
            ],
            "schedule",
        )?;
        let warmup = match Self::arg(&call, "warmup") {
            Some(w) => self.count(w, 0)?,
            None => 0,
        };
        let frac = |v: f64| (0.0..=1.0).contains(&v);
        let kind = match call.name.as_str() {
            "constant" => ScheduleKind::Constant,
            "step" => {
                let Some(every) = Self::arg(&call, "every") else {
                    self.err(
                        "E0804",
                        call.span,
                        "`step` needs `every`",
                        "no interval",
                        "write `step(every: 1000, gamma: 0.1)`",
                    );
                    return None;
                };
                let every = self.count(every, 1)?;
                let gamma = self.num_arg(&call, "gamma", 0.1, |v| v > 0.0 && v <= 1.0, "in (0, 1]");
                ScheduleKind::Step { every, gamma }
            }
            "cosine" => ScheduleKind::Cosine { min: self.num_arg(&call, "min", 0.0, frac, "in [0, 1]") },
            _ => ScheduleKind::Linear { end: self.num_arg(&call, "end", 0.0, frac, "in [0, 1]") },
        };
        Some(Schedule { kind, warmup })
    }

    fn groups(&mut self, e: &Expr) -> Vec<ParamGroup> {
        let items: Vec<&Expr> = match &e.kind {
            ExprKind::List(xs) => xs.iter().collect(),
            _ => vec![e],
        };
        let mut out = Vec::new();
        for it in items {
            let Some(call) =
                self.call(it, &[("group", &["match", "weight_decay", "lr_scale"])], "parameter group")
            else {
                continue;
            };
            let Some(m) = Self::arg(&call, "match") else {
                self.err(
                    "E0804",
                    call.span,
                    "`group` needs `match`",
                    "no patterns",
                    "write `group(match: [\"*.bias\", \"*norm*\"], weight_decay: 0)`",
                );
                continue;
            };
            let patterns = match self.value(m) {
                Some(Value::Str(s)) => vec![s.to_string()],
                Some(Value::List(xs)) if xs.iter().all(|x| matches!(x, Value::Str(_))) => xs
                    .iter()
                    .filter_map(|x| match x {
                        Value::Str(s) => Some(s.to_string()),
                        _ => None,
                    })
                    .collect(),
                Some(_) => {
                    self.err(
                        "E0805",
                        m.span,
                        "`match` takes a path pattern or a list of them",
                        "not strings",
                        "write `match: [\"*.bias\"]`",
                    );
                    continue;
                }
                None => continue,
            };
            let weight_decay = Self::arg(&call, "weight_decay").and_then(|w| self.number(w));
            let lr_scale =
                self.num_arg(&call, "lr_scale", 1.0, |v| v >= 0.0 && v.is_finite(), "non-negative");
            out.push(ParamGroup { patterns, weight_decay, lr_scale, span: call.span });
        }
        out
    }

    /// `every(N, on: [...])`; returns the interval and the splits.
    #[allow(clippy::type_complexity)]
    fn eval(&mut self, e: &Expr) -> Option<(Option<u64>, Option<Vec<String>>)> {
        let (n, call) = self.every(e, "eval", &["on"])?;
        let on = match call.and_then(|c| Self::arg(&c, "on")) {
            None => None,
            Some(o) => match self.value(o)? {
                Value::Str(s) => Some(vec![s.to_string()]),
                Value::List(xs) if xs.iter().all(|x| matches!(x, Value::Str(_))) => Some(
                    xs.iter()
                        .filter_map(|x| match x {
                            Value::Str(s) => Some(s.to_string()),
                            _ => None,
                        })
                        .collect(),
                ),
                _ => {
                    self.err(
                        "E0805",
                        o.span,
                        "`on` takes split names",
                        "not split names",
                        "write `on: [\"valid\", \"test\"]`",
                    );
                    return None;
                }
            },
        };
        Some((n, on))
    }

    /// `N`, `every(N, ...)` or `end(...)` (only at the end of the run).
    fn every<'e>(
        &mut self,
        e: &'e Expr,
        what: &str,
        extra: &[&str],
    ) -> Option<(Option<u64>, Option<Call<'e>>)> {
        if !matches!(e.kind, ExprKind::Call { .. } | ExprKind::Name(_)) {
            return self.count(e, 1).map(|n| (Some(n), None));
        }
        let mut every_params = vec!["n"];
        every_params.extend_from_slice(extra);
        let call = self.call(e, &[("every", &every_params), ("end", extra)], &format!("{what} interval"))?;
        if call.name == "end" {
            return Some((None, Some(call)));
        }
        let Some(n) = Self::arg(&call, "n") else {
            self.err(
                "E0804",
                call.span,
                "`every` needs a number of steps",
                "no interval",
                format!("write `{what}: every(100)`"),
            );
            return None;
        };
        let n = self.count(n, 1)?;
        Some((Some(n), Some(call)))
    }

    // ---- values ----------------------------------------------------------------------------

    fn value(&mut self, e: &Expr) -> Option<Value> {
        let mut el = crate::elab::ConstEvaluator::new(self.prog);
        let v = el.eval(e);
        self.diags.extend(el.into_diagnostics());
        (!v.is_poison()).then_some(v)
    }

    fn number(&mut self, e: &Expr) -> Option<f64> {
        match self.value(e)? {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            other => {
                self.err(
                    "E0805",
                    e.span,
                    format!("expected a number, found {}", other.kind()),
                    "not a number",
                    "write a number such as `3e-4`",
                );
                None
            }
        }
    }

    fn positive(&mut self, e: &Expr, what: &str) -> Option<f64> {
        let v = self.number(e)?;
        if !(v > 0.0 && v.is_finite()) {
            self.err(
                "E0805",
                e.span,
                format!("{what} must be positive, found {v}"),
                "not positive",
                "give a positive number",
            );
            return None;
        }
        Some(v)
    }

    fn count(&mut self, e: &Expr, min: u64) -> Option<u64> {
        match self.value(e)? {
            Value::Int(i) if i >= min as i64 => Some(i as u64),
            Value::Int(i) => {
                self.err(
                    "E0805",
                    e.span,
                    format!("expected an int >= {min}, found {i}"),
                    "too small",
                    format!("give at least {min}"),
                );
                None
            }
            other => {
                self.err(
                    "E0805",
                    e.span,
                    format!("expected an int, found {}", other.kind()),
                    "not an int",
                    "write a whole number",
                );
                None
            }
        }
    }

    fn boolean(&mut self, e: &Expr) -> Option<bool> {
        match self.value(e)? {
            Value::Bool(b) => Some(b),
            other => {
                self.err(
                    "E0805",
                    e.span,
                    format!("expected a bool, found {}", other.kind()),
                    "not a bool",
                    "write `true` or `false`",
                );
                None
            }
        }
    }

    fn string(&mut self, e: &Expr) -> Option<String> {
        match self.value(e)? {
            Value::Str(s) => Some(s.to_string()),
            other => {
                self.err(
                    "E0805",
                    e.span,
                    format!("expected a string, found {}", other.kind()),
                    "not a string",
                    "write a quoted path",
                );
                None
            }
        }
    }
}

fn pair(v: &Value) -> Option<(f64, f64)> {
    let xs = match v {
        Value::Tuple(xs) | Value::List(xs) => xs,
        _ => return None,
    };
    let num = |v: &Value| match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    };
    match xs.as_slice() {
        [a, b] => Some((num(a)?, num(b)?)),
        _ => None,
    }
}

fn list_or_nothing(params: &[&str]) -> String {
    if params.is_empty() {
        "no arguments".into()
    } else {
        params.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let cos = Schedule { kind: ScheduleKind::Cosine { min: 0.0 }, warmup: 100 };
        assert!((cos.factor(0, 2000) - 0.01).abs() < 1e-12);
        assert!(
            (cos.factor(99, 2000) - (0.5 * (1.0 + (std::f64::consts::PI * 99.0 / 2000.0).cos()))).abs()
                < 1e-12
        );
        assert!(cos.factor(2000, 2000).abs() < 1e-12);
        let step = Schedule { kind: ScheduleKind::Step { every: 10, gamma: 0.5 }, warmup: 0 };
        assert_eq!(step.factor(9, 100), 1.0);
        assert_eq!(step.factor(10, 100), 0.5);
        assert_eq!(step.factor(25, 100), 0.25);
        let lin = Schedule { kind: ScheduleKind::Linear { end: 0.5 }, warmup: 0 };
        assert!((lin.factor(50, 100) - 0.75).abs() < 1e-12);
    }
}
