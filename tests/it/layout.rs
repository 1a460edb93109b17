//! The house rules, checked on the source: each piece in its layer.
//!
//! - the database driver is named only under `src/store/sqlite/`;
//! - `src/server/` makes no token call and opens no transaction (it calls one
//!   domain operation per request);
//! - no import cycle between modules (at the depth of files and of the
//!   modules they contain);
//! - the configuration page names every setting's environment override;
//! - the README is a front door that links every page of `docs/`, and no
//!   link in the documentation is dead (files and anchors).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::harness::root;

/// Every `.rs` file under `dir`, with its path relative to `src/`.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    files_under(dir, &root().join("src"))
}

/// Every `.rs` file under `dir`, named relative to `base`, with its text.
fn files_under(dir: &Path, base: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read");
                out.push((path.strip_prefix(base).expect("under its base").to_path_buf(), text));
            }
        }
    }
    out.sort();
    out
}

/// The code of a file without its comments and its unit tests.
fn code(text: &str) -> String {
    let without_tests = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    without_tests.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

#[test]
fn each_database_driver_is_named_only_in_its_backend() {
    let drivers =
        [("store/sqlite", &["rusqlite"][..]), ("store/postgres", &["tokio_postgres", "deadpool_postgres"][..])];
    for (path, text) in sources(&root().join("src")) {
        let code = code(&text);
        for (backend, names) in drivers {
            if path.starts_with(backend) || path == Path::new(&format!("{backend}.rs")) {
                continue;
            }
            for name in names {
                assert!(!code.contains(name), "src/{} names {name}, a driver of {backend}", path.display());
            }
        }
    }
}

#[test]
fn the_http_layer_makes_no_token_call_and_opens_no_transaction() {
    let forbidden = [
        "sign_digest",
        "sign_raw",
        "sign_message",
        "sign_ecdsa_p1363",
        "generate_key_pair",
        "Keystore",
        ".write().await",
        ".read().await",
        "Transactions",
        "Transaction",
    ];
    for (path, text) in sources(&root().join("src/server")) {
        let code = code(&text);
        for f in forbidden {
            assert!(!code.contains(f), "src/{} uses {f}", path.display());
        }
    }
}

#[test]
fn no_source_file_is_over_800_lines() {
    // A file past 800 lines is split by what it does (tests may move to a
    // `tests.rs` of their own, which this does not count).
    let mut files = files_under(&root().join("src"), &root());
    files.extend(files_under(&root().join("keystore/src"), &root()));
    assert!(files.len() > 100, "the sources were read: {}", files.len());
    for (path, text) in files {
        if path.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let lines = text.lines().count();
        assert!(lines <= 800, "{} has {lines} lines: split it by what it does", path.display());
    }
}

#[test]
fn every_api_route_is_routed_through_the_openapi_document() {
    // The API, CSC and OIDC token routes are registered only by
    // `routes!(handler)` (their `#[utoipa::path]`), which puts them in the
    // document too: a plain `.route("/api/...")` would answer without being
    // documented. The browser flows and the OIDC pages stay plain routes.
    let documented = ["\"/api/", "\"/csc/", "\"/oidc/token", "\"/oidc/revoke", "\"/oidc/userinfo"];
    let mut routed = 0;
    for (path, text) in sources(&root().join("src")) {
        let code = code(&text);
        for (at, _) in code.match_indices(".route(") {
            routed += 1;
            let rest = code[at + ".route(".len()..].trim_start();
            for prefix in documented {
                assert!(
                    !rest.starts_with(prefix) && !rest.starts_with(&format!("&format!({prefix}")),
                    "src/{} routes {}… without the OpenAPI document: register it with routes!(handler)",
                    path.display(),
                    &rest[..rest.len().min(40)]
                );
            }
        }
    }
    assert!(routed > 20, "the check sees the router ({routed} routes)");
}

/// The module a path of segments names: the longest prefix that is a module.
fn module_of(modules: &BTreeSet<Vec<String>>, path: &[String]) -> Option<Vec<String>> {
    (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains(p))
}

/// The modules each module refers to (`crate::`, `super::` and child paths).
fn imports() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files = sources(&root().join("src"));
    let module = |p: &Path| -> Vec<String> {
        let mut parts: Vec<String> = p.with_extension("").iter().map(|s| s.to_string_lossy().into_owned()).collect();
        if parts == ["lib"] || parts == ["main"] {
            parts.clear();
        }
        parts
    };
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(p, _)| module(p)).collect();
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
    let mut graph = BTreeMap::new();
    for (path, text) in &files {
        let me = module(path);
        let code = code(text);
        let parent: Vec<String> = me.iter().take(me.len().saturating_sub(1)).cloned().collect();
        let mut refs: Vec<Vec<String>> = Vec::new();
        // Paths after `crate::` and `super::`, with `{a, b::c}` groups opened.
        for (anchor, base) in [("crate::", Vec::new()), ("super::", parent.clone())] {
            for (i, _) in code.match_indices(anchor) {
                let rest = &code[i + anchor.len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    let end = group.find('}').unwrap_or(group.len());
                    for item in group[..end].split(',') {
                        let segs: Vec<String> =
                            item.trim().split("::").map(ident).take_while(|s| !s.is_empty()).collect();
                        refs.push(base.iter().cloned().chain(segs).collect());
                    }
                } else {
                    let segs: Vec<String> = rest.split("::").map(ident).take_while(|s| !s.is_empty()).collect();
                    refs.push(base.iter().cloned().chain(segs).collect());
                }
            }
        }
        // A file's own child modules, used by their relative path.
        for m in modules.iter().filter(|m| m.len() == me.len() + 1 && m.starts_with(&me)) {
            let name = &m[me.len()];
            let used = code.match_indices(&format!("{name}::")).any(|(i, _)| {
                !code[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                    || code[..i].ends_with("self::")
            });
            if used {
                refs.push(m.clone());
            }
        }
        let targets: &mut BTreeSet<Vec<String>> = graph.entry(me.clone()).or_default();
        for r in refs {
            if let Some(m) = module_of(&modules, &r).or_else(|| (r.len() <= me.len()).then(|| r.clone())) {
                if m != me && modules.contains(&m) {
                    targets.insert(m);
                }
            }
        }
    }
    graph
}

/// A cycle in the graph of modules cut at `depth` segments, if there is one.
fn cycle(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>, depth: usize) -> Option<Vec<String>> {
    let cut = |m: &Vec<String>| m.iter().take(depth).cloned().collect::<Vec<_>>().join("::");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in graph {
        for to in tos {
            let (a, b) = (cut(from), cut(to));
            if a != b {
                edges.entry(a).or_default().insert(b);
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_owned(), 1);
        path.push(n.to_owned());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m.as_str()) {
                Some(1) => {
                    let start = path.iter().position(|p| p == m).unwrap_or(0);
                    let mut c = path[start..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, edges, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(n.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    let nodes: Vec<String> = edges.keys().cloned().collect();
    for n in nodes {
        if !state.contains_key(&n) {
            if let Some(c) = visit(&n, &edges, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn no_module_imports_a_module_that_imports_it() {
    let graph = imports();
    assert!(graph.len() > 40, "the source was read: {} modules", graph.len());
    // The check itself: a cycle is found when there is one.
    let mut looped = graph.clone();
    looped.entry(vec!["seam".into()]).or_default().insert(vec!["server".into()]);
    assert!(cycle(&looped, 1).is_some(), "a planted cycle is found");
    for depth in 1..=3 {
        if let Some(c) = cycle(&graph, depth) {
            panic!("import cycle between modules: {}", c.join(" → "));
        }
    }
}

#[test]
fn the_configuration_page_names_every_environment_override() {
    let page = std::fs::read_to_string(root().join("docs/configuration.md")).expect("docs/configuration.md");
    for setting in inkan::config::env::SETTINGS {
        let var = setting.var();
        assert!(page.contains(&var), "docs/configuration.md does not name {var}");
    }
}

/// A heading's anchor as GitHub makes it: lower case, punctuation dropped
/// (but `-` and `_`), spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.insert(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

/// The targets of a Markdown file's inline links `](target)`, outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn the_readme_is_a_front_door_and_no_link_in_the_documentation_is_dead() {
    let root = root();
    let mut pages: Vec<PathBuf> = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 7, "the pages of docs/");
    pages.extend(docs.iter().cloned());
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    assert!(readme.lines().count() <= 400, "the README is a front door: a few hundred lines at most");
    for doc in &docs {
        let name = doc.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(readme.contains(&format!("](docs/{name})")), "the README does not link docs/{name}");
    }
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).expect("page");
        for target in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let file = if file.is_empty() { page.clone() } else { page.parent().expect("dir").join(file) };
            assert!(file.exists(), "{}: the link ({target}) names a file that does not exist", page.display());
            if !fragment.is_empty() {
                let text = std::fs::read_to_string(&file).expect("target");
                assert!(
                    anchors(&text).contains(fragment),
                    "{}: the link ({target}) names no heading of {}",
                    page.display(),
                    file.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "links checked: {checked}");
    assert_eq!(
        anchor("KEK rotation: strict or trusted KEKs (`[token] kek`)"),
        "kek-rotation-strict-or-trusted-keks-token-kek"
    );
    assert_eq!(anchor(" Phones (FIDO2)"), "phones-fido2");
}
