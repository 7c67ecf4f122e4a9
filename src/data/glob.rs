//! Wildcards in the file-name part of a source path (`data/austen/*.txt`): `*` matches any run
//! of characters, `?` one character. Folders are taken literally; matches are sorted so a glob
//! reads its files in a stable order.

use super::DataError;
use std::path::{Path, PathBuf};

/// Whether `name` matches `pattern` (`*` and `?` wildcards, no escapes).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Greedy matching with one backtrack point: the last `*` and where it started matching.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The files a source path names: itself, or the sorted matches of a wildcard file name.
pub fn expand(path: &Path) -> Result<Vec<PathBuf>, DataError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !name.contains(['*', '?']) {
        return Ok(vec![path.to_path_buf()]);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, &e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(dir, &e))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if glob_match(&name, &file_name) && entry.path().is_file() {
            found.push(entry.path());
        }
    }
    found.sort();
    if found.is_empty() {
        return Err(DataError::new("E0620", format!("no file matches `{}`", path.display())));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn wildcards() {
        assert!(glob_match("*.txt", "emma.txt"));
        assert!(!glob_match("*.txt", "emma.csv"));
        assert!(glob_match("e?ma.*", "emma.txt"));
        assert!(glob_match("*a*b*", "xxaYYbZ"));
        assert!(!glob_match("*a*b", "xxaYYbZ"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("?", ""));
    }
}
