//! The workspace's shape: no import cycle between the modules (files) of one crate, and no
//! non-test source file over `MAX_LINES` lines.
//!
//! Each crate root under a member's `src/` (`lib.rs`, `main.rs`, `bin/*.rs`, `bin/*/main.rs`) is
//! walked through its `mod name;` declarations (`name.rs`, `name/mod.rs`, `#[path]`), which gives
//! every file its module path. The edges are the `crate::…`, `super::…` and `self::…` paths in
//! code, `use` groups expanded (`use crate::{a::b, c}`, nested, over several lines); comments,
//! string literals and test code (`#[cfg(test)]` items, modules named `tests` and their files) are
//! left out. A path belongs to the longest module prefix that names a file (or an inline module
//! in one). Tarjan's algorithm then finds every group of files that import each other.
//!
//! Size is a file's line count less its `#[cfg(test)] mod … { … }` blocks (the tests a file carries
//! at its end); files that are test modules are not counted.
#![forbid(unsafe_code)]

#[path = "structure/scan.rs"]
mod scan;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use scan::{Head, scan};

/// The hard limit on a production file; a file nearing it is asking to be split.
const MAX_LINES: usize = 600;

#[test]
fn no_crate_has_an_import_cycle_or_an_oversized_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut report = String::new();
    let mut crates = 0;
    for member in workspace_members(&root) {
        let src = root.join(&member).join("src");
        if src.is_dir() {
            crates += 1;
            report += &check(&src, &format!("{member}/src"), MAX_LINES);
        }
    }
    assert!(crates >= 4, "found only {crates} crates with a src/ folder");
    assert!(report.is_empty(), "\n{report}");
}

/// Writes `files` (path under `src/`, text) into a temporary crate and checks it.
fn check_fixture(files: &[(&str, &str)], max_lines: usize) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).expect("mkdir");
        fs::write(path, text).expect("write");
    }
    check(dir.path(), "src", max_lines)
}

#[test]
fn a_cycle_through_a_use_group_and_super_fails_with_every_file_and_edge() {
    let report = check_fixture(
        &[
            ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
            (
                "a.rs",
                "use crate::{\n    b::{self, B},\n    c as see,\n};\n",
            ),
            (
                "b/mod.rs",
                "mod inner;\npub use self::inner::go;\npub struct B;\n",
            ),
            ("b/inner.rs", "fn f() { super::super::c::go(); }\n"),
            ("c.rs", "pub fn go() { let _ = crate::a::A; }\n"),
        ],
        600,
    );
    assert_eq!(
        report,
        "cycle in src: a.rs b/inner.rs b/mod.rs c.rs\n\
         \x20   a.rs:2 -> b/mod.rs (crate::b)\n\
         \x20   a.rs:3 -> c.rs (crate::c)\n\
         \x20   b/inner.rs:1 -> c.rs (super::super::c::go)\n\
         \x20   b/mod.rs:2 -> b/inner.rs (self::inner::go)\n\
         \x20   c.rs:1 -> a.rs (crate::a::A)\n",
    );
}

#[test]
fn paths_in_comments_strings_and_test_code_make_no_edge() {
    let files = [
        (
            "lib.rs",
            "mod a;\nmod b;\n#[path = \"renamed.rs\"]\nmod c;\n",
        ),
        (
            "a.rs",
            "use crate::b::B;\nuse self::inner::X;\nmod inner { pub struct X; fn f() { super::f(); } }\nfn f() {}\n",
        ),
        (
            "b.rs",
            concat!(
                "pub struct B;\n",
                "// crate::a::f\n",
                "/* crate::a::f /* nested */ crate::a::f */\n",
                "const S: &str = \"crate::a::f \\\" crate::a::f\";\n",
                "const R: &str = r#\"crate::a::f \" crate::a::f\"#;\n",
                "const Q: char = '{';\n",
                "fn g<'a>(x: &'a str) -> &'a str { x }\n",
                "#[cfg(test)]\nfn only_in_tests() { crate::a::f(); }\n",
                "#[cfg(test)]\nuse crate::a as _;\n",
                "#[cfg(test)]\nmod tests;\n",
                "#[cfg(test)]\npub mod fixtures {\n    use crate::a::f;\n}\n",
            ),
        ),
        ("b/tests.rs", "use crate::a::f;\n"),
        ("renamed.rs", "use crate::b::B;\n"),
    ];
    assert_eq!(check_fixture(&files, 600), "");
    // the same tree with one real path back from b to a has a cycle
    let mut with_cycle = files;
    with_cycle[2].1 = "pub struct B;\nfn h() { crate::a::f(); crate::c::k() }\n";
    let report = check_fixture(&with_cycle, 600);
    // renamed.rs is module c through its #[path]
    assert!(
        report.starts_with("cycle in src: a.rs b.rs renamed.rs\n"),
        "{report}"
    );
}

#[test]
fn a_file_over_the_limit_fails_and_its_trailing_test_module_does_not_count() {
    let body = "fn f() {}\n".repeat(600);
    let tests = format!(
        "#[cfg(test)]\nmod tests {{\n{}}}\n",
        "fn t() {}\n".repeat(50)
    );
    let over = format!("{body}fn g() {{}}\n");
    let report = check_fixture(
        &[
            ("main.rs", "mod at_limit;\nmod over;\n"),
            ("at_limit.rs", &format!("{body}{tests}")),
            ("over.rs", &over),
        ],
        600,
    );
    assert_eq!(report, "oversized: src/over.rs 601 lines (max 600)\n");
}

#[test]
fn each_binary_is_its_own_crate() {
    // `crate::` in bin/tool/main.rs's modules means the tool, not the library next to it
    let report = check_fixture(
        &[
            ("lib.rs", "pub mod a;\n"),
            ("a.rs", "pub fn f() {}\n"),
            ("bin/tool/main.rs", "mod a;\nmod b;\n"),
            ("bin/tool/a.rs", "use crate::b::g;\n"),
            ("bin/tool/b.rs", "pub fn g() { crate::a::h() }\n"),
        ],
        600,
    );
    assert_eq!(
        report,
        "cycle in src: bin/tool/a.rs bin/tool/b.rs\n\
         \x20   bin/tool/a.rs:1 -> bin/tool/b.rs (crate::b::g)\n\
         \x20   bin/tool/b.rs:1 -> bin/tool/a.rs (crate::a::h)\n"
    );
}

/// The `members = [...]` of the workspace manifest.
fn workspace_members(root: &Path) -> Vec<String> {
    let manifest = fs::read_to_string(root.join("Cargo.toml")).expect("read Cargo.toml");
    let start = manifest.find("members").expect("a members list");
    let list = &manifest[start..];
    let list = &list[list.find('[').expect("[")..=list.find(']').expect("]")];
    list.split('"')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

/// Every cycle and every oversized file of the crates rooted in `src`, one line each (empty
/// when there are none). `label` names `src` in the lines.
fn check(src: &Path, label: &str, max_lines: usize) -> String {
    let mut out = String::new();
    let mut sized = BTreeSet::new();
    for root in crate_roots(src) {
        let files = load_crate(src, &root);
        for comp in cycles(&files) {
            let names: Vec<&str> = comp.iter().map(|&f| files[f].rel.as_str()).collect();
            let _ = writeln!(out, "cycle in {label}: {}", names.join(" "));
            for &f in &comp {
                let mut inside: Vec<_> = files[f]
                    .edges
                    .iter()
                    .filter(|(t, _)| comp.contains(t))
                    .collect();
                inside.sort_by_key(|(t, (line, _))| (*line, &files[**t].rel));
                for (target, (line, path)) in inside {
                    let (from, to) = (&files[f].rel, &files[*target].rel);
                    let _ = writeln!(out, "    {from}:{line} -> {to} ({path})");
                }
            }
        }
        for file in files {
            if file.lines > max_lines && sized.insert(file.rel.clone()) {
                let n = file.lines;
                let _ = writeln!(
                    out,
                    "oversized: {label}/{} {n} lines (max {max_lines})",
                    file.rel
                );
            }
        }
    }
    out
}

fn crate_roots(src: &Path) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = ["lib.rs", "main.rs"].iter().map(|f| src.join(f)).collect();
    if let Ok(entries) = fs::read_dir(src.join("bin")) {
        for entry in entries.flatten() {
            let path = entry.path();
            roots.push(if path.is_dir() {
                path.join("main.rs")
            } else {
                path
            });
        }
    }
    roots.retain(|p| p.extension().is_some_and(|e| e == "rs") && p.is_file());
    roots.sort();
    roots
}

/// One non-test file of a crate: its module path, size and the files it imports from.
struct ModFile {
    /// Path relative to the crate's `src/`.
    rel: String,
    module: Vec<String>,
    lines: usize,
    /// Target file index → the first line and path that imports it.
    edges: BTreeMap<usize, (usize, String)>,
}

/// The non-test files reachable from `root` through `mod` declarations, with their edges.
fn load_crate(src: &Path, root: &Path) -> Vec<ModFile> {
    let mut files = Vec::new();
    let mut scans = Vec::new();
    let mut by_module: HashMap<Vec<String>, usize> = HashMap::new();
    // (file, module path, folder its child modules live in)
    let mut queue = vec![(
        root.to_path_buf(),
        Vec::new(),
        root.parent().unwrap().to_path_buf(),
    )];
    while let Some((path, module, child_dir)) = queue.pop() {
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let scan = scan(&text);
        if scan.inner_test {
            continue;
        }
        let index = files.len();
        by_module.insert(module.clone(), index);
        for inline in &scan.inline_mods {
            by_module.insert([module.clone(), inline.clone()].concat(), index);
        }
        for decl in scan.mods.iter().filter(|m| !m.test) {
            let dir = decl.inline.iter().fold(child_dir.clone(), |d, n| d.join(n));
            let (file, grand_dir) = match &decl.path {
                Some(p) if decl.inline.is_empty() => (path.parent().unwrap().join(p), None),
                Some(p) => (dir.join(p), None),
                None if dir.join(format!("{}.rs", decl.name)).is_file() => (
                    dir.join(format!("{}.rs", decl.name)),
                    Some(dir.join(&decl.name)),
                ),
                None => (dir.join(&decl.name).join("mod.rs"), None),
            };
            let grand_dir = grand_dir.unwrap_or_else(|| file.parent().unwrap().to_path_buf());
            let child = [module.clone(), decl.inline.clone(), vec![decl.name.clone()]].concat();
            queue.push((file, child, grand_dir));
        }
        let rel = path
            .strip_prefix(src)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let lines = text.lines().count() - scan.test_lines;
        files.push(ModFile {
            rel,
            module,
            lines,
            edges: BTreeMap::new(),
        });
        scans.push(scan);
    }
    for (index, scan) in scans.iter().enumerate() {
        for r in &scan.paths {
            let here = [files[index].module.clone(), r.scope.clone()].concat();
            let base = match r.head {
                Head::Crate => Vec::new(),
                Head::SelfMod => here,
                Head::Super(n) if n <= here.len() => here[..here.len() - n].to_vec(),
                Head::Super(_) => continue,
            };
            let full = [base, r.segs.clone()].concat();
            let target = (0..=full.len())
                .rev()
                .find_map(|n| by_module.get(&full[..n]));
            if let Some(&target) = target.filter(|&&t| t != index) {
                let text = format!("{}::{}", r.head.word(), r.segs.join("::"));
                files[index].edges.entry(target).or_insert((r.line, text));
            }
        }
    }
    files
}

/// Every strongly connected group of two or more files (Tarjan), each sorted by path.
fn cycles(files: &[ModFile]) -> Vec<Vec<usize>> {
    struct Tarjan<'a> {
        files: &'a [ModFile],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        stack: Vec<usize>,
        on_stack: Vec<bool>,
        next: usize,
        found: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in self.files[v].edges.keys() {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(i) if self.on_stack[w] => self.low[v] = self.low[v].min(i),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort_by(|a, b| self.files[*a].rel.cmp(&self.files[*b].rel));
                    self.found.push(comp);
                }
            }
        }
    }
    let n = files.len();
    let mut t = Tarjan {
        files,
        index: vec![None; n],
        low: vec![0; n],
        stack: Vec::new(),
        on_stack: vec![false; n],
        next: 0,
        found: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    t.found
        .sort_by(|a, b| files[a[0]].rel.cmp(&files[b[0]].rel));
    t.found
}
