//! No import cycles between the modules of the crate.
//!
//! Parses `src/**/*.rs` for `crate::…` and `super::…` paths (in `use` items and in code, with
//! `{…}` groups; comments and string literals skipped) and builds two graphs:
//! - the top-level modules (the first segment under `crate::`);
//! - the submodules of [`SPLIT`] modules (`routes::captures`, …) and their parent, where a child
//!   may use its parent (`super::json_body`) but the parent's uses of its own children (declaring
//!   and registering them) are not edges.
//!
//! Every strongly connected component of more than one module is a cycle, and fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules whose submodules form a graph of their own.
const SPLIT: &[&str] = &["routes"];

type Graph = BTreeMap<String, BTreeSet<String>>;

/// One reference found in a file: the module path of the file (plus inline modules) and the
/// absolute path referred to (segments after `crate`).
struct Reference {
    from: Vec<String>,
    to: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Semi,
    Other,
}

/// Identifiers, `::`, braces, commas and semicolons; comments, strings and chars skipped.
fn tokenize(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(&c, i + 1);
        } else if (ch == 'r' || ch == 'b')
            && let Some(end) = raw_or_byte_string(&c, i)
        {
            i = end;
        } else if ch == '\'' {
            // A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a).
            if c.get(i + 1) == Some(&'\\') {
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else if ch == ':' && next == Some(':') {
            out.push(Tok::PathSep);
            i += 2;
        } else {
            out.push(match ch {
                '{' => Tok::Open,
                '}' => Tok::Close,
                ',' => Tok::Comma,
                ';' => Tok::Semi,
                c if c.is_whitespace() => {
                    i += 1;
                    continue;
                }
                _ => Tok::Other,
            });
            i += 1;
        }
    }
    out
}

/// Index after the closing quote of a string whose content starts at `i`.
fn skip_string(c: &[char], mut i: usize) -> usize {
    while i < c.len() {
        match c[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// `r"…"`, `r#"…"#`, `b"…"`, `br#"…"#` starting at `i`: the index after it.
fn raw_or_byte_string(c: &[char], i: usize) -> Option<usize> {
    if i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if c.get(j) == Some(&'b') {
        j += 1;
    }
    let raw = c.get(j) == Some(&'r');
    if raw {
        j += 1;
    }
    if !raw {
        return (j > i && c.get(j) == Some(&'"')).then(|| skip_string(c, j + 1));
    }
    let mut hashes = 0;
    while c.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if c.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < c.len() {
        if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(j)
}

/// The module path of a file under `src/`: `routes/captures.rs` → `[routes, captures]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs").to_string();
        if !matches!(stem.as_str(), "mod" | "lib" | "main") {
            parts.push(stem);
        }
    }
    parts
}

/// Reads a path (tree) starting at `pos`, whose segments so far resolve to `base`; pushes every
/// absolute path it names. Returns the position after it.
fn read_tree(toks: &[Tok], mut pos: usize, base: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut path = base;
    loop {
        match toks.get(pos) {
            Some(Tok::Ident(id)) if id == "self" => pos += 1,
            Some(Tok::Ident(id)) if id == "super" => {
                path.pop();
                pos += 1;
            }
            Some(Tok::Ident(id)) => {
                path.push(id.clone());
                pos += 1;
            }
            Some(Tok::Open) => {
                pos += 1;
                loop {
                    match toks.get(pos) {
                        Some(Tok::Close) => return pos + 1,
                        Some(Tok::Comma) => pos += 1,
                        None => return pos,
                        Some(_) => {
                            let before = pos;
                            pos = read_tree(toks, pos, path.clone(), out);
                            if pos == before {
                                pos += 1;
                            }
                        }
                    }
                }
            }
            _ => break,
        }
        if toks.get(pos) == Some(&Tok::PathSep) {
            pos += 1;
        } else {
            break;
        }
    }
    out.push(path);
    pos
}

fn references(file_module: &[String], src: &str) -> Vec<Reference> {
    let toks = tokenize(src);
    let mut refs = Vec::new();
    // Inline modules (`mod tests { … }`): (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Open => depth += 1,
            Tok::Close => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(kw) if kw == "mod" => {
                if let (Some(Tok::Ident(name)), Some(Tok::Open)) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline.push((name.clone(), depth + 1));
                }
            }
            Tok::Ident(first) if first == "crate" || first == "super" => {
                let preceded_by_sep = i > 0 && toks[i - 1] == Tok::PathSep;
                if !preceded_by_sep && toks.get(i + 1) == Some(&Tok::PathSep) {
                    let mut here: Vec<String> = file_module.to_vec();
                    here.extend(inline.iter().map(|(n, _)| n.clone()));
                    let base = if first == "crate" {
                        Vec::new()
                    } else {
                        here.clone()
                    };
                    let start = if first == "crate" { i + 2 } else { i };
                    let mut paths = Vec::new();
                    let end = read_tree(&toks, start, base, &mut paths);
                    for to in paths {
                        refs.push(Reference {
                            from: here.clone(),
                            to,
                        });
                    }
                    i = end;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    refs
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The node of a module path in the split graph: `routes::captures::x` → `routes::captures`.
fn split_node(path: &[String]) -> Option<String> {
    let top = path.first()?;
    if !SPLIT.contains(&top.as_str()) {
        return None;
    }
    Some(match path.get(1) {
        Some(sub) => format!("{top}::{sub}"),
        None => top.clone(),
    })
}

struct Graphs {
    top: Graph,
    split: Graph,
}

fn build(src: &Path) -> Graphs {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    assert!(!files.is_empty(), "no sources under {}", src.display());
    // Module names: what a path's segment must be to count as a module.
    let mut modules: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut sources = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(src).unwrap_or(f);
        let module = module_of(rel);
        for n in 1..=module.len() {
            modules.insert(module[..n].to_vec());
        }
        let text = std::fs::read_to_string(f)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", f.display()));
        sources.push((module, text));
    }
    let mut graphs = Graphs {
        top: Graph::new(),
        split: Graph::new(),
    };
    for (module, text) in &sources {
        for r in references(module, text) {
            // The longest module prefix of the target (items of a module belong to it).
            let Some(to) = (1..=r.to.len().min(2))
                .rev()
                .map(|n| r.to[..n].to_vec())
                .find(|p| modules.contains(p))
            else {
                continue;
            };
            let (Some(from_top), Some(to_top)) = (r.from.first(), to.first()) else {
                continue;
            };
            if from_top != to_top {
                graphs
                    .top
                    .entry(from_top.clone())
                    .or_default()
                    .insert(to_top.clone());
            }
            if let (Some(a), Some(b)) = (split_node(&r.from), split_node(&to)) {
                let parent_to_child = !a.contains("::") && b.starts_with(&format!("{a}::"));
                if a != b && !parent_to_child {
                    graphs.split.entry(a).or_default().insert(b);
                }
            }
        }
    }
    graphs
}

/// Strongly connected components of more than one node (Tarjan).
fn cycles(graph: &Graph) -> Vec<BTreeSet<String>> {
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<BTreeSet<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(lw));
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                s.found.push(scc);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

/// One cycle through the component, e.g. `auth → state → config → auth`.
fn describe(graph: &Graph, scc: &BTreeSet<String>) -> String {
    let Some(start) = scc.iter().next() else {
        return String::new();
    };
    // Breadth-first from start's successors back to start, inside the component.
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.as_str()]);
    'search: while let Some(v) = queue.pop_front() {
        for w in graph.get(v).into_iter().flatten() {
            if !scc.contains(w) {
                continue;
            }
            if w == start {
                prev.insert(start.as_str(), v);
                break 'search;
            }
            if !prev.contains_key(w.as_str()) {
                prev.insert(w.as_str(), v);
                queue.push_back(w.as_str());
            }
        }
    }
    let mut path = vec![start.as_str()];
    let mut v = prev.get(start.as_str()).copied();
    while let Some(p) = v {
        path.push(p);
        if p == start {
            break;
        }
        v = prev.get(p).copied();
    }
    path.reverse();
    path.join(" → ")
}

fn unexpected_cycles(graphs: &Graphs) -> Vec<String> {
    let mut bad = Vec::new();
    for graph in [&graphs.top, &graphs.split] {
        for scc in cycles(graph) {
            bad.push(format!(
                "{{{}}}: {}",
                scc.iter().cloned().collect::<Vec<_>>().join(", "),
                describe(graph, &scc)
            ));
        }
    }
    bad
}

#[test]
fn no_module_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graphs = build(&src);
    let bad = unexpected_cycles(&graphs);
    assert!(
        bad.is_empty(),
        "import cycles between modules of the api crate:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn finds_cycles() {
    let dir = std::env::temp_dir().join(format!("module-graph-{}", std::process::id()));
    let files = [
        ("lib.rs", "pub mod a; pub mod b; pub mod c; pub mod routes;"),
        (
            "a.rs",
            "use crate::{b::{self, X}, c};\n// crate::c::nothing in a comment\nfn f() { let s = \"crate::c\"; }",
        ),
        ("b.rs", "pub fn g() { crate::a::f() }"),
        ("c.rs", "use crate::routes::MAX;"),
        (
            "routes/mod.rs",
            "pub mod x; pub mod y; pub const MAX: u8 = x::X;",
        ),
        ("routes/x.rs", "use super::y::Y; use super::MAX;"),
        (
            "routes/y.rs",
            "use super::x::X; #[cfg(test)] mod tests { use super::Y; }",
        ),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
    }
    let graphs = build(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    let top: Vec<_> = cycles(&graphs.top)
        .into_iter()
        .map(|s| s.into_iter().collect::<Vec<_>>())
        .collect();
    assert_eq!(
        top,
        vec![vec!["a".to_string(), "b".to_string()]],
        "{:?}",
        graphs.top
    );
    let split: Vec<_> = cycles(&graphs.split)
        .into_iter()
        .map(|s| s.into_iter().collect::<Vec<_>>())
        .collect();
    assert_eq!(
        split,
        vec![vec!["routes::x".to_string(), "routes::y".to_string()]],
        "{:?}",
        graphs.split
    );
    assert_eq!(describe(&graphs.top, &cycles(&graphs.top)[0]), "a → b → a");
}
