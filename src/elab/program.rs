//! Loading a program: the root file, the files it `use`s (relative paths and embedded stdlib
//! files), parse results, and each file's scope of visible item names.

use super::value::ItemRef;
use crate::diag::Diagnostic;
use crate::source::{FileId, SourceFile, SourceMap, Span};
use crate::syntax::ast::{self, Item, UseTarget};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The standard library, embedded in the binary: `use nn` loads `stdlib/nn.model`.
pub const STDLIB: &[(&str, &str)] = &[("nn", include_str!("../../stdlib/nn.model"))];

/// A parsed program: every loaded file and the names each one sees.
#[derive(Debug)]
pub struct Program {
    pub sources: SourceMap,
    /// Parsed files; `files[i].file == FileId(i)`.
    pub files: Vec<ast::File>,
    /// Names visible in each file: its own items, then items of the files it uses.
    pub scopes: Vec<HashMap<String, ItemRef>>,
    /// The file given by the user.
    pub root: FileId,
    /// Problems found while loading and parsing.
    pub diagnostics: Vec<Diagnostic>,
}

impl Program {
    /// Loads a file from disk with everything it uses.
    pub fn load(path: &Path) -> Program {
        let mut loader = Loader::default();
        let root = match std::fs::read_to_string(path) {
            Ok(text) => {
                let name = path.display().to_string();
                loader.add_file(SourceFile::new(name, Some(path.to_path_buf()), text), None)
            }
            Err(e) => {
                let id = loader.add_file(SourceFile::new(path.display().to_string(), None, ""), None);
                loader.diags.push(
                    Diagnostic::error("E0105", format!("cannot read `{}`: {e}", path.display()))
                        .with_help("check the path and that the file is readable"),
                );
                id
            }
        };
        loader.finish(root)
    }

    /// Loads source text held in memory; relative `use` paths resolve against `base_dir`.
    pub fn from_source(name: &str, text: &str, base_dir: Option<&Path>) -> Program {
        let mut loader = Loader::default();
        let path = base_dir.map(|d| d.join(name));
        let root = loader.add_file(SourceFile::new(name, path, text), None);
        loader.finish(root)
    }

    pub fn item(&self, r: ItemRef) -> &Item {
        &self.files[r.file as usize].items[r.item as usize]
    }

    /// Looks a name up in a file's scope.
    pub fn resolve(&self, file: FileId, name: &str) -> Option<ItemRef> {
        self.scopes[file.0 as usize].get(name).copied()
    }

    /// Whether the file is part of the embedded standard library.
    pub fn is_stdlib(&self, file: FileId) -> bool {
        self.sources.get(file).name.starts_with("<stdlib>/")
    }

    /// Items of the root file.
    pub fn root_items(&self) -> impl Iterator<Item = (ItemRef, &Item)> {
        let f = self.root.0;
        self.files[f as usize]
            .items
            .iter()
            .enumerate()
            .map(move |(i, it)| (ItemRef { file: f, item: i as u32 }, it))
    }

    /// The `model` declarations of the root file.
    pub fn models(&self) -> Vec<(ItemRef, &ast::ModuleDecl)> {
        self.root_items()
            .filter_map(|(r, it)| match it {
                Item::Module(m) if m.kind == ast::ModuleKind::Model => Some((r, m)),
                _ => None,
            })
            .collect()
    }

    /// Finds a root-file item of any kind by name.
    pub fn find_root_item(&self, name: &str) -> Option<(ItemRef, &Item)> {
        self.root_items().find(|(_, it)| it.name().is_some_and(|n| n.name == name))
    }
}

#[derive(Default)]
struct Loader {
    sources: SourceMap,
    files: Vec<ast::File>,
    diags: Vec<Diagnostic>,
    /// For each file, the files it uses (resolved).
    uses: Vec<Vec<FileId>>,
}

impl Loader {
    /// Adds and parses a file, then loads what it uses. `stack` is the chain of files being
    /// loaded, for cycle detection.
    fn add_file(&mut self, file: SourceFile, _from: Option<FileId>) -> FileId {
        let id = self.sources.add(file);
        let text = self.sources.get(id).text.clone();
        let (ast, diags) = crate::syntax::parse(id, &text);
        self.diags.extend(diags);
        self.files.push(ast);
        self.uses.push(Vec::new());
        id
    }

    fn finish(mut self, root: FileId) -> Program {
        let mut stack = vec![root];
        self.load_uses(root, &mut stack);
        let scopes = self.build_scopes();
        Program { sources: self.sources, files: self.files, scopes, root, diagnostics: self.diags }
    }

    fn load_uses(&mut self, file: FileId, stack: &mut Vec<FileId>) {
        let uses: Vec<ast::UseDecl> = self.files[file.0 as usize]
            .items
            .iter()
            .filter_map(|it| match it {
                Item::Use(u) => Some(u.clone()),
                _ => None,
            })
            .collect();
        for u in uses {
            let Some(target) = self.resolve_use(file, &u) else { continue };
            if let Some(pos) = stack.iter().position(|&f| f == target) {
                let cycle: Vec<String> = stack[pos..]
                    .iter()
                    .chain(std::iter::once(&target))
                    .map(|f| self.sources.get(*f).name.clone())
                    .collect();
                self.diags.push(
                    Diagnostic::error("E0104", format!("cyclic `use`: {}", cycle.join(" -> ")))
                        .at(u.span, "this `use` closes the cycle")
                        .with_help("move the shared declarations into a third file that both can use"),
                );
                continue;
            }
            if !self.uses[file.0 as usize].contains(&target) {
                self.uses[file.0 as usize].push(target);
            }
            stack.push(target);
            self.load_uses(target, stack);
            stack.pop();
        }
    }

    /// Finds or loads the file a `use` names.
    fn resolve_use(&mut self, from: FileId, u: &ast::UseDecl) -> Option<FileId> {
        match &u.target {
            UseTarget::Stdlib(name) => {
                let key = format!("<stdlib>/{}.model", name.name);
                if let Some(id) = self.sources.find_name(&key) {
                    return Some(id);
                }
                match STDLIB.iter().find(|(n, _)| *n == name.name) {
                    Some((_, text)) => Some(self.add_file(SourceFile::new(key, None, *text), Some(from))),
                    None => {
                        let known: Vec<&str> = STDLIB.iter().map(|(n, _)| *n).collect();
                        self.diags.push(
                            Diagnostic::error("E0106", format!("unknown standard library module `{}`", name.name))
                                .at(name.span, "not in the standard library")
                                .with_help(format!(
                                    "the standard library has: {}; a file of your own is used with `use \"path.model\"`",
                                    known.join(", ")
                                )),
                        );
                        None
                    }
                }
            }
            UseTarget::Path { path, span } => {
                let base: Option<PathBuf> =
                    self.sources.get(from).path.as_ref().and_then(|p| p.parent().map(Path::to_path_buf));
                let full = match base {
                    Some(b) => b.join(path),
                    None => PathBuf::from(path),
                };
                let canon = full.canonicalize().unwrap_or_else(|_| full.clone());
                if let Some(id) = self.sources.files().find(|(_, f)| {
                    f.path.as_ref().map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
                        == Some(canon.clone())
                }) {
                    return Some(id.0);
                }
                match std::fs::read_to_string(&full) {
                    Ok(text) => {
                        // Shown in diagnostics: relative to the using file's shown name, so
                        // messages do not depend on where the project was checked out.
                        let from_name = self.sources.get(from).name.clone();
                        let name = lexical_join(Path::new(&from_name).parent(), path);
                        Some(self.add_file(SourceFile::new(name, Some(full), text), Some(from)))
                    }
                    Err(e) => {
                        // Named as the using file names it, so messages do not depend on where
                        // the project was checked out.
                        let from_name = self.sources.get(from).name.clone();
                        let shown = lexical_join(Path::new(&from_name).parent(), path);
                        self.diags.push(
                            Diagnostic::error("E0105", format!("cannot read `{shown}`: {e}"))
                                .at(*span, "used here")
                                .with_help("paths in `use` are relative to the file that contains the `use`"),
                        );
                        None
                    }
                }
            }
        }
    }

    /// Each file sees its own items (duplicates reported) and then those of the files it uses.
    fn build_scopes(&mut self) -> Vec<HashMap<String, ItemRef>> {
        let mut own: Vec<HashMap<String, ItemRef>> = Vec::new();
        for (fi, f) in self.files.iter().enumerate() {
            let mut m: HashMap<String, ItemRef> = HashMap::new();
            let mut first: HashMap<String, Span> = HashMap::new();
            for (ii, it) in f.items.iter().enumerate() {
                let Some(name) = it.name() else { continue };
                if let Some(prev) = first.get(&name.name) {
                    self.diags.push(
                        Diagnostic::error("E0102", format!("`{}` is defined twice", name.name))
                            .at(name.span, "second definition")
                            .with_label(*prev, "first defined here")
                            .with_help("rename one of them"),
                    );
                    continue;
                }
                first.insert(name.name.clone(), name.span);
                m.insert(name.name.clone(), ItemRef { file: fi as u32, item: ii as u32 });
            }
            own.push(m);
        }
        let mut scopes = own.clone();
        for (fi, scope) in scopes.iter_mut().enumerate() {
            for used in &self.uses[fi] {
                for (name, r) in &own[used.0 as usize] {
                    scope.entry(name.clone()).or_insert(*r);
                }
            }
        }
        scopes
    }
}

/// `dir/path` with `.` and `a/..` pairs removed, as text.
fn lexical_join(dir: Option<&Path>, path: &str) -> String {
    let joined = match dir {
        Some(d) => d.join(path),
        None => PathBuf::from(path),
    };
    let mut parts: Vec<String> = Vec::new();
    for c in joined.components() {
        match c {
            std::path::Component::CurDir | std::path::Component::RootDir => {}
            std::path::Component::ParentDir if parts.last().is_some_and(|p| p != "..") => {
                parts.pop();
            }
            other => parts.push(other.as_os_str().to_string_lossy().into_owned()),
        }
    }
    let s = parts.join("/");
    if joined.is_absolute() && !s.starts_with('/') { format!("/{s}") } else { s }
}
