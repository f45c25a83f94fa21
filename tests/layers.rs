//! The layering of `src/` (see `docs/architecture.md`), checked mechanically over the source:
//!
//! - a layer imports only the layers below it: `core` < `model` < `analytics` < `state` <
//!   `serve` < `io` < `cli`;
//! - no import cycles between modules (a module is a file directly in a layer's folder, or a
//!   folder there such as `model/als/`, whose files are one module split up);
//! - the replay crate is used only by `cli/`, `io/embedded.rs` and `io/kafka/` (its Kafka client
//!   options, shared by both binaries);
//! - `anyhow` only in `cli/`, and no `Result<_, String>` outside it;
//! - every module file starts with a `//!` comment, which says what it may import (`May import`).
//!
//! A reference is any `crate::<layer>::<module>` path in the code (in `use` lines or inline),
//! `super::<module>` from a layer's top-level file, and `streamflix_replay` / `anyhow` anywhere.
//! Comments are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LAYERS: [&str; 7] = ["core", "model", "analytics", "state", "serve", "io", "cli"];

/// Where the replay crate may be used (paths relative to `src/`, prefixes).
const REPLAY_ALLOWED: [&str; 3] = ["cli/", "io/embedded.rs", "io/kafka/"];

/// A source file: its path relative to `src/` and its code without comments.
struct Source {
    rel: String,
    code: String,
    first_line: String,
    /// The leading `//!` block.
    text_head: String,
}

/// The module a path relative to `src/` belongs to: `layer::name` (`core::processor` for
/// `core/processor.rs`, `model::als` for anything under `model/als/`, `core` for `core/mod.rs`).
fn module_of(rel: &str) -> Option<(String, String)> {
    let mut parts = rel.trim_end_matches(".rs").split('/');
    let layer = parts.next()?;
    if !LAYERS.contains(&layer) {
        return None;
    }
    let name = parts.next().unwrap_or("mod");
    Some((layer.to_string(), if name == "mod" { layer.to_string() } else { format!("{layer}::{name}") }))
}

fn rank(layer: &str) -> usize {
    LAYERS.iter().position(|l| *l == layer).expect("a known layer")
}

/// The code of `text` without `//` comments (doc comments included) and string literals' content.
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::layer::module` references in `code`, as module names (`layer::module`, or `layer`
/// for the layer's own `mod.rs` items).
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        // `streamflix_replay::…::crate::` cannot occur; `$crate::` is a macro's, skip it.
        if code[..i].ends_with('$') {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        let path: String =
            rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
        let mut segs = path.split("::").filter(|s| !s.is_empty());
        let Some(layer) = segs.next() else { continue };
        if !LAYERS.contains(&layer) {
            continue;
        }
        match segs.next() {
            Some(m) if m.chars().next().is_some_and(|c| c.is_ascii_lowercase()) => {
                out.insert(format!("{layer}::{m}"));
            }
            _ => {
                out.insert(layer.to_string());
            }
        }
        // `use crate::layer::{a, b::c}`: each item of a brace list directly after the layer.
        if let Some(list) = rest.strip_prefix(&format!("{layer}::{{")) {
            let inner = &list[..list.find('}').unwrap_or(list.len())];
            for item in inner.split(',') {
                let m = item.trim().split("::").next().unwrap_or("").trim();
                if m.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && m != "self" {
                    out.insert(format!("{layer}::{m}"));
                }
            }
        }
    }
    out
}

/// Whether `line` has a `Result<T, String>` (the error type at the top level of the brackets).
fn string_error(line: &str) -> bool {
    line.match_indices("Result<").any(|(i, _)| {
        let (mut depth, mut last_arg) = (1, String::new());
        for c in line[i + "Result<".len()..].chars() {
            match c {
                '<' | '(' | '[' => depth += 1,
                '>' | ')' | ']' => {
                    depth -= 1;
                    if depth == 0 {
                        return last_arg.trim() == "String";
                    }
                }
                ',' if depth == 1 => {
                    last_arg.clear();
                    continue;
                }
                _ => {}
            }
            if depth == 1 {
                last_arg.push(c);
            }
        }
        false
    })
}

/// Everything found wrong with `sources`.
fn violations(sources: &[Source]) -> Vec<String> {
    let mut errors = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sources {
        if !s.first_line.starts_with("//!") {
            errors.push(format!("{}: no `//!` module comment at the top", s.rel));
        } else if !s.text_head.contains("May import") && s.rel != "lib.rs" && s.rel != "main.rs" {
            errors.push(format!("{}: its `//!` comment does not say what it may import", s.rel));
        }
        if s.rel == "lib.rs" || s.rel == "main.rs" {
            continue;
        }
        let Some((layer, module)) = module_of(&s.rel) else {
            errors.push(format!("{}: not in a layer folder ({})", s.rel, LAYERS.join(", ")));
            continue;
        };
        let mut refs = crate_refs(&s.code);
        // `super::name` from a layer's top-level file is a sibling module of the same layer.
        if s.rel.matches('/').count() == 1 {
            for (i, _) in s.code.match_indices("super::") {
                let name: String =
                    s.code[i + 7..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                    refs.insert(format!("{layer}::{name}"));
                }
            }
        }
        for r in &refs {
            let target_layer = r.split("::").next().expect("non-empty");
            if rank(target_layer) > rank(&layer) {
                errors.push(format!("{}: imports `{r}`, a layer above {layer}", s.rel));
            }
            if *r != module && *r != layer {
                graph.entry(module.clone()).or_default().insert(r.clone());
            }
        }
        graph.entry(module.clone()).or_default();
        if s.code.contains("streamflix_replay::") && !REPLAY_ALLOWED.iter().any(|p| s.rel.starts_with(p)) {
            errors.push(format!(
                "{}: uses the replay crate (allowed only in {})",
                s.rel,
                REPLAY_ALLOWED.join(", ")
            ));
        }
        if layer != "cli" {
            if s.code.contains("anyhow") {
                errors.push(format!("{}: uses anyhow outside cli/ (use a thiserror enum)", s.rel));
            }
            for line in s.code.lines().filter(|l| string_error(l)) {
                errors.push(format!("{}: `Result<_, String>` in library code: {}", s.rel, line.trim()));
            }
        }
    }
    for cycle in cycles(&graph) {
        errors.push(format!("import cycle: {}", cycle.join(" -> ")));
    }
    errors
}

/// The cycles of `graph`, one per strongly connected component with more than one module.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Tarjan's algorithm, recursive: the graph has a few dozen nodes.
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn read_sources(src: &Path) -> Vec<Source> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("readable src/") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable source");
            let rel = p.strip_prefix(src).expect("under src").to_string_lossy().replace('\\', "/");
            source(&rel, &text)
        })
        .collect()
}

fn source(rel: &str, text: &str) -> Source {
    Source {
        rel: rel.to_string(),
        code: strip_comments(text),
        first_line: text.lines().next().unwrap_or("").into(),
        text_head: text.lines().take_while(|l| l.starts_with("//!")).collect::<Vec<_>>().join("\n"),
    }
}

#[test]
fn the_source_tree_keeps_its_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let sources = read_sources(&src);
    assert!(sources.len() > 30, "found {} source files under {}", sources.len(), src.display());
    let errors = violations(&sources);
    assert!(errors.is_empty(), "layering violations:\n{}", errors.join("\n"));
}

/// The checker itself finds what it is for (so the test above cannot pass by finding nothing).
#[test]
fn the_checker_finds_upward_imports_cycles_and_forbidden_crates() {
    let files = [
        source("core/a.rs", "//! a\n//! May import: core.\nuse crate::state::codec::encode;\nuse crate::core::b::X;\n"),
        source("core/b.rs", "//! b\n//! May import: core.\nuse super::a::Y;\n"),
        source(
            "model/m.rs",
            "//! m\n//! May import: core.\nuse crate::core::{a, b::Z};\nfn f(q: &HashMap<String, String>) -> anyhow::Result<()> { Ok(()) }\n",
        ),
        source(
            "state/codec.rs",
            "//! c\n//! May import: core.\nuse streamflix_replay::time;\npub fn g() -> Result<u8, String> { Ok(0) }\n",
        ),
        source("io/kafka/lanes.rs", "//! ok\n//! May import: nothing.\nuse streamflix_replay::kafka::QuietEof;\n"),
        source("io/quiet.rs", "//! says nothing of imports\n"),
        source("serve/x.rs", "no module comment\n// use crate::cli::args; (a comment is not an import)\n"),
    ];
    let errors = violations(&files);
    let has = |needle: &str| errors.iter().any(|e| e.contains(needle));
    assert!(has("core/a.rs: imports `state::codec`, a layer above core"), "{errors:#?}");
    assert!(has("import cycle: core::a -> core::b"), "{errors:#?}");
    assert!(has("model/m.rs: uses anyhow outside cli/"), "{errors:#?}");
    assert!(has("state/codec.rs: uses the replay crate"), "{errors:#?}");
    assert!(has("state/codec.rs: `Result<_, String>`"), "{errors:#?}");
    assert!(has("serve/x.rs: no `//!` module comment"), "{errors:#?}");
    assert!(has("io/quiet.rs: its `//!` comment does not say what it may import"), "{errors:#?}");
    assert!(!has("io/kafka/lanes.rs"), "{errors:#?}");
    assert!(!has("crate::cli"), "{errors:#?}");
    assert_eq!(errors.len(), 7, "{errors:#?}");
}
