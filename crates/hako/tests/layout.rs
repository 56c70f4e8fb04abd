//! The README's layout table names every crate of the workspace.

#[test]
fn the_readme_lists_every_crate() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let crates = std::fs::read_dir(format!("{root}/crates")).unwrap();
    let mut checked = 0;
    for entry in crates {
        let path = entry.unwrap().path();
        if !path.join("Cargo.toml").exists() {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let row = format!("| `crates/{name}` |");
        assert!(readme.contains(&row), "README.md has no layout row {row}");
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} crates found");
}
