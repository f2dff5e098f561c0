//! The crate's top-level modules import each other without a cycle (issue 15: `auth`, `config` and
//! `ratelimit` used to import each other in a circle), so each can be understood and changed from the
//! modules below it. Read from the source: every `crate::<module>` path outside comments is an edge, and
//! so is every module named directly inside a grouped import, `crate::{<module>::..., ...}`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first names of the `crate::` paths in source text, comments left out: `crate::a::X` names `a`,
/// and a grouped import names each path directly inside its braces, `crate::{a::X, b::{Y, Z}}` naming
/// `a` and `b` (over several lines too).
fn crate_names(text: &str) -> Vec<String> {
    let code: Vec<&str> = text.lines().map(|line| line.split("//").next().unwrap_or("")).collect();
    let code = code.join("\n");
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
    let mut names = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = rest[i + "crate::".len()..].trim_start();
        let Some(group) = rest.strip_prefix('{') else {
            names.push(ident(rest));
            continue;
        };
        // Inside the braces: a name starts the group and follows each comma at the group's own depth.
        let (mut depth, mut at_start, mut chars) = (1, true, group.char_indices());
        while depth > 0 {
            let (j, c) = chars.next().unwrap_or_else(|| panic!("an unclosed `crate::{{` group in:\n{group}"));
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 1 => at_start = true,
                c if at_start && depth == 1 && (c.is_ascii_alphabetic() || c == '_') => {
                    names.push(ident(&group[j..]));
                    at_start = false;
                }
                _ => {}
            }
        }
        rest = chars.as_str();
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
}

/// module -> the modules it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative.iter().next().expect("a component").to_string_lossy().trim_end_matches(".rs").to_owned();
        if top == "bin" || top == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        let edges = graph.entry(top.clone()).or_default();
        for name in crate_names(&text) {
            if name.starts_with(|c: char| c.is_ascii_lowercase()) && name != top {
                edges.insert(name);
            }
        }
    }
    assert!(graph.values().any(|edges| !edges.is_empty()), "read no module's imports under {}", src.display());
    graph
}

/// A cycle through `start`, if any (depth-first).
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(node).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    walk(graph, start, start, &mut path, &mut BTreeSet::new()).then(|| {
        path.push(start.to_owned());
        path
    })
}

#[test]
fn no_module_of_the_crate_imports_itself_through_others() {
    let graph = graph();
    assert!(graph.contains_key("sequencing") && graph.contains_key("auth"), "read the modules: {graph:?}");
    let cycles: Vec<String> = graph.keys().filter_map(|m| cycle_from(&graph, m)).map(|c| c.join(" -> ")).collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn a_grouped_import_names_every_module_it_reaches_into() {
    let text = "use crate::{api::X, tlog::{A, B}};\nuse crate::{\n    self, store::{self, events::StreamKey}, // crate::nothing\n    Error,\n};\n\
                let v = crate::worker::spawn(crate::VERSION);";
    assert_eq!(crate_names(text), ["api", "tlog", "store", "Error", "worker", "VERSION"]);
}

#[test]
fn the_rejection_reasons_are_a_leaf_that_every_module_may_use() {
    let graph = graph();
    assert!(graph["reason"].is_empty(), "reason imports {:?}", graph["reason"]);
}
