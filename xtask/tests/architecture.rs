//! Tidy checks, as rust-analyzer keeps them: the dependency rules of ARCHITECTURE.md, and the shape of the
//! code (no module cycles, no giant functions, no crate that swallows the workspace).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The graft crates a manifest depends on (normal dependencies; tests may use more).
fn graft_dependencies(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let mut deps: Vec<String> = doc
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|deps| {
            deps.keys()
                .filter(|k| k.starts_with("graft"))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    deps.sort();
    deps
}

/// Leaf crates: each usable alone; the foundation crate is the one graft crate they may use.
const LEAVES: &[&str] = &[
    "ingest", "backbone", "heads", "eval", "assets", "features", "onnx", "tune", "schema",
];

#[test]
fn the_foundation_depends_on_no_graft_crate() {
    assert!(graft_dependencies(&root().join("crates/stdx/Cargo.toml")).is_empty());
}

#[test]
fn leaf_crates_use_only_the_foundation() {
    for leaf in LEAVES {
        let deps = graft_dependencies(&root().join("crates").join(leaf).join("Cargo.toml"));
        assert!(
            deps.iter().all(|d| d == "graft-stdx"),
            "graft-{leaf} depends on {deps:?}"
        );
    }
}

#[test]
fn layers_point_one_way() {
    // Each layer may use the ones listed before it, never one after it.
    let leaves: Vec<String> = LEAVES.iter().map(|l| format!("graft-{l}")).collect();
    let allowed = |layer: &[&str]| -> BTreeSet<String> {
        let mut set: BTreeSet<String> = leaves.iter().cloned().collect();
        set.insert("graft-stdx".to_owned());
        set.extend(layer.iter().map(|s| s.to_string()));
        set
    };
    let layers: [(&str, BTreeSet<String>); 10] = [
        // The head kinds: each one module over the leaves (numerics, ONNX, the file contract).
        ("crates/headkit", allowed(&[])),
        ("crates/config", allowed(&["graft-headkit"])),
        ("crates/report", allowed(&[])),
        // A finished run folder (the report's types) to an MLflow server.
        ("crates/tracking", allowed(&["graft-report"])),
        (
            "crates/engine",
            allowed(&["graft-headkit", "graft-config", "graft-report"]),
        ),
        (
            "crates/jobs",
            allowed(&[
                "graft-headkit",
                "graft-config",
                "graft-report",
                "graft-engine",
            ]),
        ),
        (
            "crates/graft",
            [
                "graft-config",
                "graft-engine",
                "graft-jobs",
                "graft-tracking",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
        (
            "bindings/python",
            ["graft", "graft-config", "graft-engine", "graft-jobs"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
        // Benchmarks measure the leaf crates on their own.
        ("benches", allowed(&[])),
        (
            "xtask",
            ["graft", "graft-engine"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
    ];
    let placed: BTreeSet<String> = layers
        .iter()
        .map(|(dir, _)| dir.to_string())
        .chain(LEAVES.iter().map(|l| format!("crates/{l}")))
        .chain(["crates/stdx".to_owned()])
        .collect();
    for member in members() {
        assert!(
            placed.contains(&member),
            "workspace member {member} has no place in the layers: add it to LEAVES or to a layer here \
             (and to ARCHITECTURE.md)"
        );
    }
    for (dir, allowed) in layers {
        for dep in graft_dependencies(&root().join(dir).join("Cargo.toml")) {
            assert!(allowed.contains(&dep), "{dir} must not depend on {dep}");
        }
    }
}

/// Every package `package` reaches in Cargo.lock (dev-dependencies included, so an over-approximation).
fn locked_closure(package: &str) -> BTreeSet<String> {
    let lock: toml::Table = std::fs::read_to_string(root().join("Cargo.lock"))
        .unwrap()
        .parse()
        .unwrap();
    let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in lock["package"].as_array().unwrap() {
        let deps = p.get("dependencies").and_then(|d| d.as_array());
        let names = deps.into_iter().flatten().map(|d| {
            // "name" or "name version": the name is enough for a question about which crates appear.
            d.as_str().unwrap().split(' ').next().unwrap().to_owned()
        });
        edges
            .entry(p["name"].as_str().unwrap().to_owned())
            .or_default()
            .extend(names);
    }
    let mut seen = BTreeSet::new();
    let mut todo = vec![package.to_owned()];
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            todo.extend(edges.get(&name).into_iter().flatten().cloned());
        }
    }
    seen
}

#[test]
fn the_schema_and_the_report_build_no_runtime() {
    // The pipeline file's contract and the run folder's renderers are read by tools that run no model.
    for package in ["graft-schema", "graft-report"] {
        let closure = locked_closure(package);
        assert!(
            closure.contains("serde"),
            "{package} was not found in Cargo.lock"
        );
        for runtime in [
            "ort",
            "ort-sys",
            "polars",
            "tokenizers",
            "candle-core",
            "graft-config",
        ] {
            assert!(
                !closure.contains(runtime),
                "{package} reaches {runtime}: the schema and report crates stay free of the runtime"
            );
        }
    }
}

/// The workspace's members as the root manifest lists them (`dir/*` expanded to the folders with a
/// manifest), relative to the root: a new crate is checked without being added to a list here.
fn members() -> Vec<String> {
    let doc: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let listed = doc["workspace"]["members"].as_array().unwrap();
    let mut out = Vec::new();
    for m in listed.iter().map(|m| m.as_str().unwrap()) {
        match m.strip_suffix("/*") {
            Some(parent) => {
                for entry in std::fs::read_dir(root().join(parent)).unwrap() {
                    let path = entry.unwrap().path();
                    if path.join("Cargo.toml").is_file() {
                        out.push(format!(
                            "{parent}/{}",
                            path.file_name().unwrap().to_string_lossy()
                        ));
                    }
                }
            }
            None => out.push(m.to_owned()),
        }
    }
    out.sort();
    out
}

/// A workspace member with a `src/` folder.
struct Crate {
    name: String,
    src: PathBuf,
}

/// Every workspace member with sources (bindings and benches included).
fn crates() -> Vec<Crate> {
    let out: Vec<Crate> = members()
        .into_iter()
        .map(|m| root().join(m))
        .filter(|p| p.join("src").is_dir())
        .map(|p| Crate {
            name: p.file_name().unwrap().to_string_lossy().into_owned(),
            src: p.join("src"),
        })
        .collect();
    assert!(out.len() >= 10, "the workspace's members were not found");
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Source without comments and with string and char literals emptied (newlines kept), so that braces and
/// paths are only code's.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let newlines = |s: &[u8]| "\n".repeat(s.iter().filter(|&&c| c == b'\n').count());
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = src[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            out.push_str(&newlines(&b[i..end]));
            i = end;
        } else if b[i] == b'r'
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
            && matches!(b.get(i + 1), Some(b'"' | b'#'))
        {
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            if b.get(i + 1 + hashes) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            let close = format!("\"{}", "#".repeat(hashes));
            let start = i + 2 + hashes;
            let end = src[start..]
                .find(&close)
                .map_or(b.len(), |e| start + e + close.len());
            out.push_str("\"\"");
            out.push_str(&newlines(&b[i..end]));
            i = end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                if b[j] == b'\\' {
                    j += 1;
                }
                j += 1;
            }
            out.push_str("\"\"");
            out.push_str(&newlines(&b[i..(j + 1).min(b.len())]));
            i = j + 1;
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\u{..}'), else a lifetime.
            let rest = &src[i..];
            let len =
                if rest.len() >= 3 && rest.as_bytes()[2] == b'\'' && rest.as_bytes()[1] != b'\\' {
                    3
                } else if let Some(escaped) = rest.strip_prefix("'\\") {
                    escaped.find('\'').map_or(1, |e| e + 3)
                } else {
                    1
                };
            out.push_str(if len > 1 { "' '" } else { "'" });
            i += len;
        } else {
            let c = src[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The code before the first `#[cfg(test)]` (tests sit at the end of a module here).
fn non_test(code: &str) -> &str {
    code.find("#[cfg(test)]").map_or(code, |at| &code[..at])
}

/// Every function with a body: (name, first line, lines).
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut search = 0;
    while let Some(found) = code[search..].find("fn ") {
        let at = search + found;
        search = at + 3;
        if at > 0 && (b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_') {
            continue;
        }
        let name: String = code[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        let Some(open) = code[at..].find(['{', ';']).map(|o| at + o) else {
            continue;
        };
        if b[open] == b';' {
            continue;
        }
        let mut depth = 0;
        let mut end = open;
        for (k, &c) in b.iter().enumerate().skip(open) {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k;
                        break;
                    }
                }
                _ => {}
            }
        }
        let first = code[..at].matches('\n').count() + 1;
        let lines = code[at..end].matches('\n').count() + 1;
        out.push((name, first, lines));
    }
    out
}

/// The longest a non-test function may be.
const MAX_FUNCTION_LINES: usize = 150;

#[test]
fn no_function_is_a_giant() {
    let mut giants = Vec::new();
    for krate in crates() {
        let mut files = Vec::new();
        rust_files(&krate.src, &mut files);
        for file in files {
            let code = code_only(&std::fs::read_to_string(&file).unwrap());
            for (name, line, lines) in functions(non_test(&code)) {
                if lines > MAX_FUNCTION_LINES {
                    giants.push(format!(
                        "{}:{line} `{name}` has {lines} lines",
                        file.strip_prefix(root()).unwrap_or(&file).display()
                    ));
                }
            }
        }
    }
    assert!(
        giants.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (split them into named steps):\n{}",
        giants.join("\n")
    );
}

#[test]
fn no_crate_holds_more_than_a_third_of_the_code() {
    let mut lines: BTreeMap<String, usize> = BTreeMap::new();
    for krate in crates() {
        let mut files = Vec::new();
        rust_files(&krate.src, &mut files);
        let n: usize = files
            .iter()
            .map(|f| {
                let code = code_only(&std::fs::read_to_string(f).unwrap());
                non_test(&code)
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .count()
            })
            .sum();
        lines.insert(krate.name, n);
    }
    let total: usize = lines.values().sum();
    for (name, n) in &lines {
        assert!(
            n * 3 <= total,
            "crate `{name}` holds {n} of {total} non-test lines ({:.0}%); split it",
            100.0 * *n as f64 / total as f64
        );
    }
}

/// The modules of a crate (paths like `stages::few_shot`) and the modules each refers to through
/// `crate::` or `super::` paths.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut bodies = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap().with_extension("");
        let parts: Vec<String> = relative
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let module = match parts.last().map(String::as_str) {
            Some("lib" | "main") if parts.len() == 1 => continue,
            Some("mod") => parts[..parts.len() - 1].join("::"),
            _ => parts.join("::"),
        };
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        bodies.insert(module, non_test(&code).to_owned());
    }
    let names: Vec<String> = bodies.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (module, body) in &bodies {
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let mut refs = BTreeSet::new();
        for (prefix, base) in [("crate::", String::new()), ("super::", parent.to_owned())] {
            let mut rest = body.as_str();
            while let Some(at) = rest.find(prefix) {
                let path: String = rest[at + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let full = if base.is_empty() {
                    path
                } else {
                    format!("{base}::{path}")
                };
                // The longest module name the path starts with.
                if let Some(target) = names
                    .iter()
                    .filter(|n| {
                        *n != module && (full == **n || full.starts_with(&format!("{n}::")))
                    })
                    .max_by_key(|n| n.len())
                {
                    refs.insert(target.clone());
                }
                rest = &rest[at + prefix.len()..];
            }
        }
        graph.insert(module.clone(), refs);
    }
    graph
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    for krate in crates() {
        let graph = module_graph(&krate.src);
        // A module is on a circle when it can reach itself.
        for start in graph.keys() {
            let mut seen = BTreeSet::new();
            let mut stack: Vec<&String> = graph[start].iter().collect();
            while let Some(m) = stack.pop() {
                assert!(
                    m != start,
                    "crate `{}`: module `{start}` reaches itself through the modules it uses ({:?})",
                    krate.name,
                    graph[start]
                );
                if seen.insert(m.clone()) {
                    stack.extend(graph.get(m).into_iter().flatten());
                }
            }
        }
    }
}

#[test]
fn the_tidy_scanner_sees_functions_and_cycles() {
    // The checks are only as good as the scanner: it must skip braces in strings and comments.
    let code = code_only("fn a() {\n let s = \"}}\"; // }\n let c = '}';\n}\nfn b();\nfn c() {}\n");
    let found = functions(&code);
    assert_eq!(
        found,
        [("a".to_owned(), 1, 4), ("c".to_owned(), 6, 1)],
        "{code}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lib.rs"), "mod x; mod y;").unwrap();
    std::fs::write(dir.path().join("x.rs"), "use crate::y::f;").unwrap();
    std::fs::write(dir.path().join("y.rs"), "fn f() { crate::x::g() }").unwrap();
    let graph = module_graph(dir.path());
    assert!(graph["x"].contains("y") && graph["y"].contains("x"));
}
