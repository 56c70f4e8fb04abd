//! Which warm zygote a Python program goes to, by a static look at what it imports.
//!
//! Three zygotes serve Python runs: a plain one (the interpreter with the operator's
//! standard-library preload only), a lean one that has imported [`LEAN_PACKAGES`] too, and a
//! heavy one that has imported the whole package environment. A program whose imports name
//! no package of the environment forks from the plain one (Dify's Python template: `json`,
//! `base64`); one that names only [`LEAN_PACKAGES`] from the lean one (Dify's Jinja2
//! template). Neither pays the page tables nor the tear-down of a big parent. Anything the
//! scan cannot read for sure (an import it cannot parse, `__import__`, `importlib`) goes to
//! the heavy one. Every zygote runs every program correctly; the choice only decides which
//! one starts it faster.

use std::collections::BTreeSet;

/// Packages the lean zygote imports as well (when installed): Dify's Jinja2 template needs
/// `jinja2`, and it is small.
pub const LEAN_PACKAGES: &[&str] = &["jinja2", "markupsafe"];

/// Which zygote a program goes to, lightest first (a lighter program may also take a
/// heavier zygote).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Weight {
    /// The program imports nothing of the package environment (the standard library, or
    /// modules that are not installed at all).
    Plain,
    /// It imports packages of the environment, but only [`LEAN_PACKAGES`].
    Lean,
    /// It imports a package of the environment, or the scan could not tell.
    Heavy,
}

/// What a program imports, as far as a line-by-line look can tell.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imports {
    /// Top-level module names of the `import` and `from ... import` statements.
    pub modules: BTreeSet<String>,
    /// Something imports in a way the scan does not follow (dynamic or unparsed).
    pub unsure: bool,
}

/// Scans `code` for its imports. Conservative: a line that mentions `import` anywhere but
/// at the start of a statement, and any dynamic import, makes the result unsure.
pub fn scan(code: &str) -> Imports {
    let mut found = Imports::default();
    for marker in ["__import__", "importlib", "import_module", "runpy"] {
        if code.contains(marker) {
            found.unsure = true;
        }
    }
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with('#') || !mentions_import(line) {
            continue;
        }
        for statement in line.split(';') {
            let statement = statement.trim();
            if !mentions_import(statement) {
                continue;
            }
            match statement_modules(statement) {
                Some(modules) => found.modules.extend(modules),
                None => found.unsure = true,
            }
        }
    }
    found
}

/// The zygote for `code`, given the top-level modules of the package environment.
pub fn weigh(code: &str, environment: &BTreeSet<String>) -> Weight {
    let imports = scan(code);
    if imports.unsure {
        return Weight::Heavy;
    }
    imports
        .modules
        .iter()
        .filter(|m| environment.contains(*m))
        .map(|m| {
            if LEAN_PACKAGES.contains(&m.as_str()) {
                Weight::Lean
            } else {
                Weight::Heavy
            }
        })
        .max()
        .unwrap_or(Weight::Plain)
}

/// True when `text` holds the word `import`.
fn mentions_import(text: &str) -> bool {
    text.match_indices("import").any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + "import".len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !word(before) && !word(after)
    })
}

/// The top-level modules of one `import` or `from` statement, or `None` when the statement
/// is something else that mentions `import`.
fn statement_modules(statement: &str) -> Option<Vec<String>> {
    if let Some(rest) = statement.strip_prefix("import") {
        if !rest.starts_with([' ', '\t']) {
            return None;
        }
        let mut modules = Vec::new();
        for part in rest.split(',') {
            let name = part.split_whitespace().next()?;
            modules.push(top_level(name)?);
        }
        return Some(modules);
    }
    let rest = statement.strip_prefix("from")?;
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let mut words = rest.split_whitespace();
    let source = words.next()?;
    if words.next()? != "import" {
        return None;
    }
    if source.starts_with('.') {
        // A relative import: nothing of the environment.
        return Some(Vec::new());
    }
    Some(vec![top_level(source)?])
}

/// `a.b.c` → `a`, when it is a dotted name.
fn top_level(name: &str) -> Option<String> {
    let first = name.split('.').next()?;
    let valid = !first.is_empty()
        && first.chars().all(|c| c.is_alphanumeric() || c == '_')
        && !first.starts_with(|c: char| c.is_ascii_digit());
    valid.then(|| first.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    const DIFY_PYTHON: &str = "def main(arg1: str, arg2: str) -> dict:\n    return {\"result\": arg1 + arg2}\n\nimport json\nfrom base64 import b64decode\n\ninputs_obj = json.loads(b64decode('e30=').decode('utf-8'))\noutput_obj = main(**inputs_obj)\nprint(f'<<RESULT>>{json.dumps(output_obj)}<<RESULT>>')\n";
    const DIFY_JINJA2: &str = "import jinja2\ntemplate = jinja2.Template('''{{ a }}''')\n\nimport json\nfrom base64 import b64decode\n\ninputs_obj = json.loads(b64decode('e30=').decode('utf-8'))\nprint('<<RESULT>>' + template.render(**inputs_obj) + '<<RESULT>>')\n";

    #[test]
    fn dify_templates_are_plain_and_lean() {
        let installed = env(&["numpy", "pandas", "jinja2", "markupsafe", "requests"]);
        assert_eq!(weigh(DIFY_PYTHON, &installed), Weight::Plain);
        assert_eq!(weigh(DIFY_JINJA2, &installed), Weight::Lean);
        // Without jinja2 installed, the Jinja2 template needs nothing of the environment.
        assert_eq!(weigh(DIFY_JINJA2, &env(&["numpy"])), Weight::Plain);
    }

    #[test]
    fn a_package_of_the_environment_is_heavy() {
        let installed = env(&["numpy", "pandas", "sklearn"]);
        for code in [
            "import numpy as np\nprint(np.zeros(2))",
            "import os, pandas\n",
            "from sklearn.linear_model import LinearRegression",
            "def f():\n    import numpy\n    return numpy",
            "x = 1; import numpy.linalg",
            "from numpy import *",
        ] {
            assert_eq!(weigh(code, &installed), Weight::Heavy, "{code}");
        }
    }

    #[test]
    fn standard_modules_and_missing_ones_are_plain() {
        let installed = env(&["numpy", "jinja2"]);
        for code in [
            "import os, sys as system\nfrom collections import (OrderedDict,\n    deque)",
            "from . import sibling",
            "import no_such_module",
            "print('important')\nimported = 1",
        ] {
            assert_eq!(weigh(code, &installed), Weight::Plain, "{code}");
        }
    }

    #[test]
    fn the_heaviest_import_decides() {
        let installed = env(&["numpy", "jinja2"]);
        assert_eq!(weigh("import json, jinja2", &installed), Weight::Lean);
        assert_eq!(
            weigh("import jinja2\nimport numpy", &installed),
            Weight::Heavy
        );
        assert_eq!(
            weigh("import numpy\nimport jinja2", &installed),
            Weight::Heavy
        );
    }

    #[test]
    fn what_the_scan_cannot_follow_is_heavy() {
        let installed = env(&["numpy"]);
        for code in [
            "np = __import__('numpy')",
            "import importlib\nnp = importlib.import_module('numpy')",
            "exec('import numpy')",
            "if True: import numpy",
        ] {
            assert_eq!(weigh(code, &installed), Weight::Heavy, "{code}");
        }
    }

    #[test]
    fn the_scan_names_top_level_modules() {
        let found = scan("import a.b, c as d\nfrom e.f import g\n# import h\n");
        assert_eq!(found.modules, env(&["a", "c", "e"]));
        assert!(!found.unsure);
    }
}
