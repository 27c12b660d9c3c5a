//! The scanner: a file's tokens without comments (string literals kept as one token), then its
//! `mod` declarations, inline modules, `#[cfg(test)]` items and the module paths it uses.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    /// `::`
    Sep,
    Punct(char),
}

fn tokenize(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let word_char = |ch: char| ch.is_alphanumeric() || ch == '_';
    let (mut toks, mut i, mut line) = (Vec::new(), 0, 1);
    // Scans a quoted literal whose opening quote is at `i`, ending at `"` + `hashes` × `#`.
    let string = |mut i: usize, hashes: usize, raw: bool, line: &mut usize| {
        let mut text = String::new();
        i += 1;
        while i < c.len() {
            match c[i] {
                '\\' if !raw => {
                    text.push(at(i + 1));
                    *line += usize::from(at(i + 1) == '\n');
                    i += 2;
                    continue;
                }
                '"' if (1..=hashes).all(|k| at(i + k) == '#') => return (text, i + 1 + hashes),
                '\n' => *line += 1,
                _ => {}
            }
            text.push(c[i]);
            i += 1;
        }
        (text, i)
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
        } else if ch == '"' {
            let (text, next) = string(i, 0, false, &mut line);
            toks.push((Tok::Str(text), line));
            i = next;
        } else if ch == '\'' {
            // a char literal ('x', '\n', '\u{1F600}') or a lifetime ('a, 'static)
            if at(i + 1) == '\\' {
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
                while word_char(at(i)) {
                    i += 1;
                }
            }
        } else if word_char(ch) {
            let start = i;
            while word_char(at(i)) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let hashes = (0..).take_while(|k| at(i + k) == '#').count();
            let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
            if raw_prefix && at(i + hashes) == '"' {
                let (text, next) = string(i + hashes, hashes, true, &mut line);
                toks.push((Tok::Str(text), line));
                i = next;
            } else if matches!(word.as_str(), "b" | "c") && at(i) == '"' {
                let (text, next) = string(i, 0, false, &mut line);
                toks.push((Tok::Str(text), line));
                i = next;
            } else if word == "r" && hashes == 1 && word_char(at(i + 1)) {
                i += 1; // a raw identifier: r#type is the word `type`
            } else if word == "b" && at(i) == '\'' {
                // a byte literal: the quote is taken as a char literal next round
            } else {
                toks.push((Tok::Word(word), line));
            }
        } else if ch == ':' && at(i + 1) == ':' {
            toks.push((Tok::Sep, line));
            i += 2;
        } else {
            toks.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    toks
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Head {
    Crate,
    Super(usize),
    SelfMod,
}

impl Head {
    pub fn word(self) -> String {
        match self {
            Head::Crate => "crate".into(),
            Head::Super(n) => vec!["super"; n].join("::"),
            Head::SelfMod => "self".into(),
        }
    }
}

/// A module path used in non-test code.
#[derive(Debug)]
pub struct PathRef {
    pub head: Head,
    /// The inline modules (`mod x { … }`) it sits in, inside its file.
    pub scope: Vec<String>,
    pub segs: Vec<String>,
    pub line: usize,
}

/// A `mod name;` declaration.
#[derive(Debug)]
pub struct ModDecl {
    pub name: String,
    pub path: Option<String>,
    pub test: bool,
    pub inline: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Scan {
    pub paths: Vec<PathRef>,
    pub mods: Vec<ModDecl>,
    /// Non-test inline modules, as paths relative to the file's module.
    pub inline_mods: Vec<Vec<String>>,
    /// Lines inside `#[cfg(test)]` module blocks.
    pub test_lines: usize,
    /// The file starts with `#![cfg(test)]`.
    pub inner_test: bool,
}

/// One level of braces.
#[derive(Default, Clone)]
struct Scope {
    test: bool,
    module: Vec<String>,
    /// `(` and `[` depth inside this level.
    paren: usize,
    /// The line of the `#[cfg(test)]` on the item being read: the item ends at `;` or at its
    /// closing `}`.
    item_test: Option<usize>,
    path_attr: Option<String>,
    /// The first line of this level when it is the outermost test module.
    test_mod_line: Option<usize>,
}

pub fn scan(src: &str) -> Scan {
    let toks = tokenize(src);
    let word = |i: usize| match toks.get(i) {
        Some((Tok::Word(w), _)) => Some(w.as_str()),
        _ => None,
    };
    let is = |i: usize, t: &Tok| toks.get(i).is_some_and(|(x, _)| x == t);
    let mut out = Scan::default();
    let mut stack = vec![Scope::default()];
    let mut i = 0;
    while i < toks.len() {
        let line = toks[i].1;
        let depth = stack.len();
        let top = stack.last_mut().expect("the file level is never popped");
        match &toks[i].0 {
            Tok::Punct('#') if is(i + 1, &Tok::Punct('[')) || is(i + 1, &Tok::Punct('!')) => {
                let inner = is(i + 1, &Tok::Punct('!'));
                let open = i + 1 + usize::from(inner);
                let mut close = open;
                let mut depth = 0;
                while close < toks.len() {
                    match toks[close].0 {
                        Tok::Punct('[') => depth += 1,
                        Tok::Punct(']') if depth == 1 => break,
                        Tok::Punct(']') => depth -= 1,
                        _ => {}
                    }
                    close += 1;
                }
                let attr: Vec<&Tok> = toks[open + 1..close.min(toks.len())]
                    .iter()
                    .map(|t| &t.0)
                    .collect();
                let has = |w: &str| attr.contains(&&Tok::Word(w.into()));
                if attr.first() == Some(&&Tok::Word("cfg".into())) && has("test") && !has("not") {
                    if inner && depth == 1 {
                        out.inner_test = true;
                    } else if inner {
                        top.test = true;
                    } else {
                        top.item_test = top.item_test.or(Some(line));
                    }
                }
                if let [Tok::Word(p), Tok::Punct('='), Tok::Str(s)] = attr.as_slice()
                    && p == "path"
                {
                    top.path_attr = Some(s.clone());
                }
                i = close + 1;
                continue;
            }
            Tok::Word(w) if w == "mod" && word(i + 1).is_some() => {
                let name = word(i + 1).unwrap().to_string();
                let test = top.test || top.item_test.is_some() || name == "tests";
                if is(i + 2, &Tok::Punct(';')) {
                    let path = top.path_attr.take();
                    let inline = top.module.clone();
                    out.mods.push(ModDecl {
                        name,
                        path,
                        test,
                        inline,
                    });
                    top.item_test = None;
                    i += 3;
                    continue;
                }
                if is(i + 2, &Tok::Punct('{')) {
                    let module = [top.module.clone(), vec![name]].concat();
                    let outermost_test = test && !top.test;
                    if !test {
                        out.inline_mods.push(module.clone());
                    }
                    let test_mod_line = outermost_test.then(|| top.item_test.unwrap_or(line));
                    stack.push(Scope {
                        test,
                        module,
                        test_mod_line,
                        ..Scope::default()
                    });
                    i += 3;
                    continue;
                }
            }
            Tok::Word(w)
                if matches!(w.as_str(), "crate" | "super" | "self") && is(i + 1, &Tok::Sep) =>
            {
                let mut head = match w.as_str() {
                    "crate" => Head::Crate,
                    "super" => Head::Super(1),
                    _ => Head::SelfMod,
                };
                let mut j = i + 1;
                while is(j, &Tok::Sep) && word(j + 1) == Some("super") {
                    head = match head {
                        Head::Super(n) => Head::Super(n + 1),
                        _ => Head::Super(1),
                    };
                    j += 2;
                }
                let mut found = Vec::new();
                let next = use_tree(&toks, j, Vec::new(), &mut found);
                if !top.test && top.item_test.is_none() {
                    for (segs, line) in found {
                        out.paths.push(PathRef {
                            head,
                            scope: top.module.clone(),
                            segs,
                            line,
                        });
                    }
                }
                i = next;
                continue;
            }
            Tok::Punct('{') => {
                let test = top.test || top.item_test.is_some();
                let scope = Scope {
                    test,
                    module: top.module.clone(),
                    ..Scope::default()
                };
                stack.push(scope);
            }
            Tok::Punct('}') if depth > 1 => {
                let closed = stack.pop().expect("more than the file level");
                if let Some(first) = closed.test_mod_line {
                    out.test_lines += line - first + 1;
                }
                let top = stack.last_mut().expect("the file level");
                if top.paren == 0 {
                    top.item_test = None;
                    top.path_attr = None;
                }
            }
            Tok::Punct('(' | '[') => top.paren += 1,
            Tok::Punct(')' | ']') => top.paren = top.paren.saturating_sub(1),
            Tok::Punct(';') if top.paren == 0 => {
                top.item_test = None;
                top.path_attr = None;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Expands the rest of a path (from `::` at `j`) into the module paths it names, groups
/// included: `::a::{b, c::{d, self}}` gives `a::b`, `a::c::d` and `a::c`. Returns the index
/// after the path.
fn use_tree(
    toks: &[(Tok, usize)],
    mut j: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, usize)>,
) -> usize {
    while matches!(toks.get(j), Some((Tok::Sep, _))) {
        match toks.get(j + 1).map(|t| &t.0) {
            Some(Tok::Word(w)) => {
                prefix.push(w.clone());
                j += 2;
            }
            Some(Tok::Punct('{')) => {
                j += 2;
                while let Some((tok, _)) = toks.get(j) {
                    match tok {
                        Tok::Punct('}') => return j + 1,
                        Tok::Word(w) if w == "as" => j += 2,
                        Tok::Word(w) if w == "self" => {
                            out.push((prefix.clone(), toks[j].1));
                            j += 1;
                        }
                        Tok::Word(w) => {
                            let item = [prefix.clone(), vec![w.clone()]].concat();
                            j = use_tree(toks, j + 1, item, out);
                        }
                        _ => j += 1,
                    }
                }
                return j;
            }
            _ => break,
        }
    }
    out.push((prefix, toks[j - 1].1));
    j
}
