//! `wrenn template build | ls | get | rm`.
//!
//! `build` parses the recipe and checks its build context here first
//! (errors name the file, line and column, and a source leading out of the
//! context is refused before anything is sent), packs each COPY/ADD step's
//! sources ([`context`]), then streams the build from the control plane:
//! a progress bar on a terminal, one JSON object per event with `--json`,
//! plain lines otherwise. Interrupting the command cancels the build.

mod archive;
mod context;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use serde_json::{Value, json};
use wrenn_proto::wrenn::v1::{
    BuildTemplateRequest, DeleteTemplateRequest, ListTemplatesRequest, Template, TemplateRef,
    build_event::Event,
};

use crate::client::GlobalArgs;
use crate::json;

#[derive(Subcommand)]
pub enum TemplateCmd {
    /// Build a template from a recipe or a Dockerfile.
    Build(BuildArgs),
    /// List templates.
    #[command(alias = "list")]
    Ls(JsonArgs),
    /// Show one template (with its build log).
    Get(NameArgs),
    /// Delete a template; refused while sandboxes use it unless --force.
    #[command(alias = "delete")]
    Rm(RmArgs),
}

#[derive(Args)]
pub struct BuildArgs {
    /// The template's name.
    name: String,
    /// The recipe (a file named `Dockerfile…` or `*.dockerfile` is read as a Dockerfile).
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// The template to start from when the recipe has no FROM (default base).
    #[arg(long)]
    from: Option<String>,
    /// The directory COPY and ADD read from (default: the recipe's directory).
    #[arg(long)]
    context: Option<PathBuf>,
    /// Run every step, even those with a cached result.
    #[arg(long)]
    no_cache: bool,
    /// An IPv4 network (CIDR) the build's sandboxes may reach although the
    /// default egress policy refuses it (a package mirror on a private
    /// address). Repeatable, or comma-separated.
    #[arg(long, value_name = "CIDR", value_delimiter = ',', value_parser = super::sandbox::parse_cidr)]
    allow_out: Vec<wrenn_types::Cidr>,
    /// One JSON object per build event.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct JsonArgs {
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct NameArgs {
    name: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RmArgs {
    name: String,
    /// Delete although sandboxes use it (they keep their image).
    #[arg(long)]
    force: bool,
}

fn is_dockerfile(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    name == "dockerfile" || name.starts_with("dockerfile.") || name.ends_with(".dockerfile")
}

/// The request for `a`: the recipe read, parsed and its context packed.
pub fn build_request(a: &BuildArgs) -> Result<BuildTemplateRequest> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("read the recipe {}", a.file.display()))?;
    let file = a.file.display().to_string();
    let dockerfile = is_dockerfile(&a.file);
    let recipe = if dockerfile {
        wrenn_types::recipe::parse_dockerfile(&file, &text)
    } else {
        wrenn_types::recipe::parse(&file, &text)
    }?;
    let root = match &a.context {
        Some(c) => c.clone(),
        None => a
            .file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_owned),
    };
    let ctx = wrenn_types::recipe::collect(&file, &recipe, &root)?;
    let context = context::step_contexts(&recipe, &ctx)?;
    Ok(BuildTemplateRequest {
        name: a.name.clone(),
        recipe: text,
        recipe_file: file,
        dockerfile,
        from: a.from.clone().unwrap_or_default(),
        no_cache: a.no_cache,
        context,
        allow_out: a.allow_out.iter().map(ToString::to_string).collect(),
    })
}

pub async fn run(g: &GlobalArgs, cmd: TemplateCmd) -> Result<()> {
    // A recipe's mistakes are reported before connecting.
    let req = match &cmd {
        TemplateCmd::Build(a) => Some(build_request(a)?),
        _ => None,
    };
    let mut c = g.connect_templates().await?;
    match cmd {
        TemplateCmd::Build(a) => {
            let req = req.expect("made above");
            build(&mut c, req, a.json).await?;
        }
        TemplateCmd::Ls(a) => {
            let list = c
                .list(ListTemplatesRequest {})
                .await
                .context("list templates")?
                .into_inner()
                .templates;
            if a.json {
                json::print(&Value::Array(list.iter().map(template_json).collect()));
            } else {
                println!(
                    "{:<24} {:>10}  {:<20} {:<12} DIGEST",
                    "NAME", "SIZE", "UPDATED", "HOST"
                );
                for t in &list {
                    println!(
                        "{:<24} {:>10}  {:<20} {:<12} {}",
                        t.name,
                        human_bytes(t.size_bytes),
                        json::time(t.updated_at.as_ref()).unwrap_or_default(),
                        t.host_id,
                        &t.recipe_digest[..t.recipe_digest.len().min(12)]
                    );
                }
            }
        }
        TemplateCmd::Get(a) => {
            let t = c
                .get(TemplateRef {
                    name: a.name.clone(),
                })
                .await
                .with_context(|| format!("get template {}", a.name))?
                .into_inner();
            if a.json {
                json::print(&template_json(&t));
            } else {
                let v = template_json(&t);
                for (k, val) in v.as_object().into_iter().flatten() {
                    if k != "build_log" {
                        println!(
                            "{k:<14} {}",
                            match val {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            }
                        );
                    }
                }
                if !t.build_log.is_empty() {
                    println!("build log:\n{}", t.build_log.trim_end());
                }
            }
        }
        TemplateCmd::Rm(a) => {
            c.delete(DeleteTemplateRequest {
                name: a.name.clone(),
                force: a.force,
            })
            .await
            .with_context(|| format!("delete template {}", a.name))?;
            println!("{}", a.name);
        }
    }
    Ok(())
}

async fn build(
    c: &mut crate::client::TemplatesClient,
    req: BuildTemplateRequest,
    as_json: bool,
) -> Result<()> {
    let name = req.name.clone();
    let started = Instant::now();
    let mut events = c
        .build(req)
        .await
        .with_context(|| format!("build template {name}"))?
        .into_inner();
    let tty = !as_json && std::io::stdout().is_terminal();
    let bar = tty.then(|| {
        let b = indicatif::ProgressBar::new(1);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} step {pos}/{len} {bar:30} {elapsed} {msg}",
            )
            .expect("a valid template"),
        );
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        b
    });
    let mut out = std::io::stdout().lock();
    let mut pending = Vec::new();
    while let Some(ev) = events.next().await {
        let ev = ev.with_context(|| format!("build template {name}"))?;
        let Some(ev) = ev.event else { continue };
        match ev {
            Event::Step(s) => {
                if as_json {
                    json_line(
                        &mut out,
                        json!({"event": "step", "index": s.index, "total": s.total, "line": s.line, "text": s.text, "cached": s.cached}),
                    )?;
                } else if let Some(b) = &bar {
                    b.set_length(s.total.into());
                    b.set_position((s.index - 1).into());
                    b.set_message(s.text.clone());
                    b.println(format!(
                        "step {}/{}: {}{}",
                        s.index,
                        s.total,
                        s.text,
                        if s.cached { " (cached)" } else { "" }
                    ));
                } else {
                    writeln!(
                        out,
                        "step {}/{}: {}{}",
                        s.index,
                        s.total,
                        s.text,
                        if s.cached { " (cached)" } else { "" }
                    )?;
                }
            }
            Event::Output(data) => {
                if as_json {
                    json_line(
                        &mut out,
                        json!({"event": "output", "data": String::from_utf8_lossy(&data)}),
                    )?;
                } else if let Some(b) = &bar {
                    pending.extend_from_slice(&data);
                    while let Some(i) = pending.iter().position(|&c| c == b'\n') {
                        let line: Vec<u8> = pending.drain(..=i).collect();
                        b.println(format!("  {}", String::from_utf8_lossy(&line).trim_end()));
                    }
                } else {
                    out.write_all(&data)?;
                }
            }
            Event::Finished(f) => {
                if as_json {
                    json_line(
                        &mut out,
                        json!({"event": "finished", "index": f.index, "cached": f.cached, "duration_ms": f.duration_ms}),
                    )?;
                } else if let Some(b) = &bar {
                    b.set_position(f.index.into());
                }
            }
            Event::Template(t) => {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                if as_json {
                    let mut v = template_json(&t);
                    v["event"] = json!("template");
                    json_line(&mut out, v)?;
                } else {
                    writeln!(
                        out,
                        "template {} built in {:.1} s: {} ({} steps run, {} cached; flatten {:.1} s)",
                        t.name,
                        started.elapsed().as_secs_f64(),
                        human_bytes(t.size_bytes),
                        t.steps_run,
                        t.steps_cached,
                        t.flatten_ms as f64 / 1000.0
                    )?;
                }
                return Ok(());
            }
        }
    }
    if let Some(b) = &bar {
        b.abandon();
    }
    bail!("build template {name}: the control plane ended the build without a result")
}

fn json_line(out: &mut impl Write, v: Value) -> Result<()> {
    writeln!(out, "{v}")?;
    out.flush()?;
    Ok(())
}

fn template_json(t: &Template) -> Value {
    let d = t.defaults.clone().unwrap_or_default();
    json!({
        "name": t.name,
        "size_bytes": t.size_bytes,
        "recipe_digest": t.recipe_digest,
        "host_id": t.host_id,
        "created_at": json::time(t.created_at.as_ref()),
        "updated_at": json::time(t.updated_at.as_ref()),
        "user": d.user,
        "workdir": d.workdir,
        "env": d.env,
        "start": d.start,
        "ready": d.ready,
        "build_ms": t.build_ms,
        "steps_run": t.steps_run,
        "steps_cached": t.steps_cached,
        "image_bytes": t.image_bytes,
        "flatten_ms": t.flatten_ms,
        "build_log": t.build_log,
    })
}

fn human_bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if b as f64 >= 1024.0 * MIB {
        format!("{:.2} GiB", b as f64 / (1024.0 * MIB))
    } else {
        format!("{:.1} MiB", b as f64 / MIB)
    }
}
