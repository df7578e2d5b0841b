//! A recipe's build context as the host receives it: one archive per
//! COPY/ADD step, laid out as the files land under the destination
//! (`wrenn.v1.StepContext`): Docker's rules — a directory source's
//! contents go into the destination, a file source goes in by its name,
//! and one file copied to a destination not ending in `/` is that file.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, Result};
use wrenn_proto::wrenn::v1::StepContext;
use wrenn_types::recipe::context::{Context, EntryKind};
use wrenn_types::recipe::{Instruction, Recipe};

use super::archive::{Archive, Kind};

/// Names ADD unpacks instead of copying.
const ARCHIVES: [&str; 7] = [
    ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz",
];

pub fn step_contexts(recipe: &Recipe, ctx: &Context) -> Result<Vec<StepContext>> {
    let mut out = Vec::new();
    for step in &ctx.steps {
        let Instruction::Copy {
            sources,
            dest,
            extract,
        } = &recipe.steps[step.step].instruction
        else {
            continue;
        };
        let mut archive = Archive::default();
        let mut names: Vec<(String, u32, &EntryKind, PathBuf)> = Vec::new();
        let mut single_file = false;
        for (n, source) in sources.iter().enumerate() {
            let rel = normalize(Path::new(source));
            let Some(top) = step.entries.iter().find(|e| e.path == rel) else {
                continue;
            };
            match &top.kind {
                EntryKind::Dir => {
                    for e in step
                        .entries
                        .iter()
                        .filter(|e| e.path != rel && e.path.starts_with(&rel))
                    {
                        let under = e.path.strip_prefix(&rel).unwrap_or(&e.path);
                        names.push((
                            format!("copy/{}", under.display()),
                            e.mode,
                            &e.kind,
                            e.path.clone(),
                        ));
                    }
                }
                kind => {
                    let base = rel
                        .file_name()
                        .map(|b| b.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if *extract && ARCHIVES.iter().any(|x| base.ends_with(x)) {
                        names.push((
                            format!("extract/{n}-{base}"),
                            top.mode,
                            kind,
                            top.path.clone(),
                        ));
                    } else {
                        single_file = sources.len() == 1 && !dest.ends_with('/');
                        names.push((format!("copy/{base}"), top.mode, kind, top.path.clone()));
                    }
                }
            }
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        names.dedup_by(|a, b| a.0 == b.0);
        for (name, mode, kind, path) in &names {
            let full = ctx.root.join(path);
            let target;
            let kind = match kind {
                EntryKind::File { .. } => Kind::File(&full),
                EntryKind::Dir => Kind::Dir,
                EntryKind::Symlink { target: t } => {
                    target = t.to_string_lossy().into_owned();
                    Kind::Symlink(&target)
                }
            };
            archive.add(name, *mode, kind).with_context(|| {
                format!(
                    "packing {} for line {}",
                    path.display(),
                    recipe.steps[step.step].line
                )
            })?;
        }
        out.push(StepContext {
            step: step.step as u32,
            archive: archive.finish(),
            single_file,
        });
    }
    Ok(out)
}

/// A source as the context's entries name it: `.` components and
/// trailing `/` dropped (the recipe check refused `..` and absolute ones).
fn normalize(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(archive: &[u8]) -> Vec<String> {
        archive
            .chunks(512)
            .filter(|h| h[257..262] == *b"ustar")
            .map(|h| {
                String::from_utf8_lossy(&h[..100])
                    .trim_end_matches('\0')
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn lays_sources_out_as_they_land() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("app/sub")).unwrap();
        std::fs::write(root.join("app/main.py"), "print(1)").unwrap();
        std::fs::write(root.join("app/sub/x"), "x").unwrap();
        std::fs::write(root.join("one.txt"), "1").unwrap();
        std::fs::write(root.join("data.tar"), "not really").unwrap();
        let text = "COPY ./app/ one.txt dest/\nCOPY one.txt /etc/one.conf\n";
        let recipe = wrenn_types::recipe::parse("r", text).unwrap();
        let ctx = wrenn_types::recipe::collect("r", &recipe, root).unwrap();
        let steps = step_contexts(&recipe, &ctx).unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(
            names(&steps[0].archive),
            ["copy/main.py", "copy/one.txt", "copy/sub/", "copy/sub/x"]
        );
        assert!(!steps[0].single_file);
        assert_eq!(names(&steps[1].archive), ["copy/one.txt"]);
        assert!(steps[1].single_file);
        assert_eq!(steps[1].step, 1);

        let docker = "ADD data.tar one.txt /srv/\n";
        let recipe = wrenn_types::recipe::parse_dockerfile("Dockerfile", docker).unwrap();
        let ctx = wrenn_types::recipe::collect("Dockerfile", &recipe, root).unwrap();
        let steps = step_contexts(&recipe, &ctx).unwrap();
        assert_eq!(
            names(&steps[0].archive),
            ["copy/one.txt", "extract/0-data.tar"]
        );
    }
}
