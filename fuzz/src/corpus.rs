//! The seed corpus (`corpus/<target>/`) through each target, without a
//! fuzzer: every committed input, findings' reproducers included, keeps
//! passing in plain `cargo test`.

use std::path::{Path, PathBuf};

use crate::TARGETS;

fn fuzz_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Runs every seed of `name` through its target; the seeds that fail, with why.
fn replay(name: &str) {
    let target = TARGETS.iter().find(|(n, _)| *n == name).unwrap().1;
    let seeds = files(&fuzz_dir().join("corpus").join(name));
    assert!(seeds.len() >= 5, "corpus/{name} has {} seeds", seeds.len());
    let failed: Vec<String> = seeds
        .iter()
        .filter_map(|seed| {
            let data = std::fs::read(seed).unwrap();
            std::panic::catch_unwind(|| target(&data))
                .err()
                .map(|_| seed.display().to_string())
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{name}: failing seeds (panics above): {failed:#?}"
    );
}

#[test]
fn route_corpus() {
    replay("route");
}

#[test]
fn rewrite_corpus() {
    replay("rewrite");
}

#[test]
fn chunked_corpus() {
    replay("chunked");
}

#[test]
fn byte_size_corpus() {
    replay("byte_size");
}

#[test]
fn guest_path_corpus() {
    replay("guest_path");
}

/// `TARGETS`, the binaries in `fuzz_targets/` and the corpus directories
/// name the same targets (`scripts/fuzz` runs `TARGETS`' binaries).
#[test]
fn every_target_has_a_binary_and_a_corpus() {
    let mut names: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    let stems = |dir: &str| -> Vec<String> {
        let mut out: Vec<String> = files(&fuzz_dir().join(dir))
            .iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    };
    assert_eq!(stems("fuzz_targets"), names);
    let mut corpora: Vec<String> = std::fs::read_dir(fuzz_dir().join("corpus"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    corpora.sort();
    assert_eq!(corpora, names);
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for name in &names {
        let bin = format!("name = \"fuzz-{}\"", name.replace('_', "-"));
        assert!(manifest.contains(&bin), "Cargo.toml has no [[bin]] {bin}");
    }
}
