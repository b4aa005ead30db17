//! Directories given as inputs are read recursively, as `kubectl apply -R -f` reads them:
//! every `*.yaml`, `*.yml` and `*.json` file at any depth, in a stable order, each once,
//! even when a symbolic link points back up the tree.

use std::path::{Path, PathBuf};

use policy_lang::load_sources;
use policy_lang::manifest::read_inputs;

/// A fresh directory under the system's temporary directory, removed when dropped.
struct TempTree(PathBuf);

impl TempTree {
    fn new(name: &str) -> TempTree {
        let dir = std::env::temp_dir().join(format!("policyc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a temporary directory");
        TempTree(dir)
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.0.join(relative);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("creating folders");
        std::fs::write(path, text).expect("writing a file");
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

/// The file names `read_inputs` picked, relative to `root`.
fn read(root: &Path) -> (Vec<String>, policy_lang::Bundle) {
    let (sources, diagnostics) = read_inputs(&[root.to_path_buf()]).expect("reading the tree");
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let names = sources
        .iter()
        .map(|(_, f)| {
            let path = Path::new(&f.name);
            path.strip_prefix(root).expect("under the root").display().to_string()
        })
        .collect();
    (names, load_sources(&sources))
}

#[test]
fn manifests_at_every_depth_are_read_in_path_order() {
    let tree = TempTree::new("tree");
    tree.write("z-top.yaml", &namespace("top"));
    tree.write("apps/shop/web.yml", &namespace("shop"));
    tree.write(
        "apps/shop/policies/deny.json",
        r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "deep"}}"#,
    );
    tree.write("apps/README.md", "# not a manifest\n");
    tree.write("apps/shop/values.yaml.tmpl", "{{ .Values }}\n");
    tree.write("apps/empty/.keep", "");

    let (names, bundle) = read(&tree.0);
    assert_eq!(names, ["apps/shop/policies/deny.json", "apps/shop/web.yml", "z-top.yaml"]);
    let mut read: Vec<&str> =
        bundle.namespaces.iter().map(|n| n.meta.name.value.as_str()).collect();
    read.sort_unstable();
    assert_eq!(read, ["deep", "shop", "top"]);
    assert!(bundle.diagnostics.is_empty(), "{:?}", bundle.diagnostics);
}

#[test]
fn a_mistake_deep_in_the_tree_is_reported_at_its_file() {
    let tree = TempTree::new("mistake");
    tree.write("ok.yaml", &namespace("shop"));
    tree.write(
        "team/a/b/bad.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: Not_A_Label\n",
    );
    let (sources, _) = read_inputs(std::slice::from_ref(&tree.0)).expect("reading the tree");
    let bundle = load_sources(&sources);
    let [diag] = bundle.diagnostics.as_slice() else {
        panic!("expected one diagnostic, got {:?}", bundle.diagnostics)
    };
    assert_eq!(diag.code.code, "PL0008");
    let span = diag.span.expect("a span");
    assert!(sources.get(span.file).name.ends_with("team/a/b/bad.yaml"));
    assert_eq!((span.line, span.col), (4, 9));
}

#[cfg(unix)]
#[test]
fn a_link_back_up_the_tree_reads_each_directory_once() {
    let tree = TempTree::new("loop");
    tree.write("a/one.yaml", &namespace("one"));
    tree.write("a/b/two.yaml", &namespace("two"));
    // a/b/up -> a: following it naively would recurse for ever.
    std::os::unix::fs::symlink(tree.0.join("a"), tree.0.join("a/b/up")).expect("a symlink");
    let (names, bundle) = read(&tree.0);
    assert_eq!(names, ["a/b/two.yaml", "a/one.yaml"]);
    assert_eq!(bundle.namespaces.len(), 2);
}
